"""Growth of the parsers of model output on hostile text: the CPU time each public extraction
or verifier function takes as its input doubles (1k, 2k, ... characters).

    python -m bench.parsers                 # 1k .. 16k characters, 10 s per call at most
    python -m bench.parsers --max-chars 131072 --limit 30

Each cell is the worst CPU time (the shortest of --repeats runs) over a set of adversarial
shapes ("1+" * n, "(" * n, "\\boxed{" * n, "answer is " * n, digit runs, "####" and many
spaces, ...) at that length, with "!" when some shape made the function raise instead of
answering. Sizes past one whose worst call, doubled twice, would pass `--limit` seconds are
not measured ("-"). Linear code doubles per column; quadratic code quadruples. The worst shape
per function is named last.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from typing import Any

from cluster.answers import answers_equivalent, extract_answer, extract_stated_answer, normalize_answer
from cluster.tasks.game24 import check_game24, extract_game24_expression, parse_game24_step
from cluster.types import Candidate, ChatMessage, Problem
from cluster.verifiers.arithmetic import ArithmeticStepVerifier, find_arithmetic_claims
from cluster.verifiers.game24 import Game24StepsVerifier, Game24Verifier
from cluster.verifiers.numeric import NumericAnswerVerifier

# Units of hostile text, each repeated to (about) the wanted length, and a
# few runs of whitespace between a marker and what would follow it (regex backtracking).
UNITS = (
    "1+",
    "(",
    "(1+",
    "1)",
    "\\boxed{",
    "{",
    "answer is ",
    "The answer is not ",
    "#### ",
    "9",
    "1,",
    "1 x ",
    "1 = ",
    "<<1+1=",
    "-",
    "$1 ",
    "1/",
    "\\frac{1}{",
    "12 * 3 = 36. ",
    "a ",
    "1 ",
    "1.",
    ".",
)
PADDED = ("####", "answer", "answer is", "-", "$", "(", "1 = ")


def _repeat(unit: str) -> Callable[[int], str]:
    # Whole units: a unit cut short at the end can end the worst case early ("answer is no").
    return lambda chars: unit * (chars // len(unit))


def _padded(marker: str) -> Callable[[int], str]:
    return lambda chars: marker + " " * (chars - len(marker) - 1) + "x"


SHAPES: dict[str, Callable[[int], str]] = {
    **{repr(unit): _repeat(unit) for unit in UNITS},
    **{f"{marker!r} + spaces": _padded(marker) for marker in PADDED},
}

GAME24 = Problem(
    messages=(ChatMessage("user", "Use 4 9 10 13 to make 24."),),
    task="game24",
    numbers=(4, 9, 10, 13),
)
MATH = Problem(messages=(ChatMessage("user", "How many?"),), task="math", reference="72")


def _verify(verifier: Any, problem: Problem) -> Callable[[str], object]:
    def run(text: str) -> object:
        return asyncio.run(verifier.verify(problem, Candidate(node_id="n", text=text, answer=None)))

    return run


FUNCTIONS: dict[str, Callable[[str], object]] = {
    "answers.extract_answer": extract_answer,
    "answers.extract_stated_answer": extract_stated_answer,
    "answers.normalize_answer": normalize_answer,
    "answers.answers_equivalent": lambda text: answers_equivalent(text, "72"),
    "arithmetic.find_arithmetic_claims": find_arithmetic_claims,
    "game24.extract_game24_expression": extract_game24_expression,
    "game24.check_game24": lambda text: check_game24(text, (4, 9, 10, 13)),
    "game24.parse_game24_step": parse_game24_step,
    "verifier numeric": _verify(NumericAnswerVerifier(), MATH),
    "verifier arithmetic": _verify(ArithmeticStepVerifier(), MATH),
    "verifier game24": _verify(Game24Verifier(), GAME24),
    "verifier game24_steps": _verify(Game24StepsVerifier(), GAME24),
}


def seconds(function: Callable[[str], object], text: str, repeats: int) -> tuple[float, bool]:
    """The shortest CPU time of `repeats` runs of `function(text)` (CPU time, not wall time: other
    work on a shared machine would only add noise), and whether it raised (the old code did on
    long numbers)."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        try:
            function(text)
        except Exception:
            return time.process_time() - start, True
        times.append(time.process_time() - start)
        if times[-1] > 1.0:
            # Slow enough to measure once; repeating would only make the run longer.
            break
    return min(times), False


def measure(
    function: Callable[[str], object], sizes: list[int], limit: float, repeats: int
) -> tuple[list[str], str]:
    """The worst time over all shapes at each size ("!" marks a call that raised), and the shape
    that was worst at the last size measured. Sizes after one whose worst call, doubled twice,
    would pass `limit` are skipped."""
    cells: list[str] = []
    worst_shape = ""
    last = 0.0
    for size in sizes:
        if last * 4 >= limit:
            cells.append("-")
            continue
        times = {shape: seconds(function, make(size), repeats) for shape, make in SHAPES.items()}
        worst_shape = max(times, key=lambda shape: times[shape][0])
        last = times[worst_shape][0]
        raised = [shape for shape, (_, failed) in times.items() if failed]
        cells.append(f"{last * 1000:.1f}ms" + ("!" if raised else ""))
    return cells, worst_shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--min-chars", type=int, default=1024)
    parser.add_argument("--max-chars", type=int, default=16384)
    parser.add_argument("--limit", type=float, default=10.0, help="seconds a call may take")
    parser.add_argument("--repeats", type=int, default=3, help="runs per input; the shortest counts")
    args = parser.parse_args()
    sizes = []
    size = args.min_chars
    while size <= args.max_chars:
        sizes.append(size)
        size *= 2
    header = ["function"] + [f"{size // 1024}k" if size % 1024 == 0 else str(size) for size in sizes]
    rows = []
    for name, function in FUNCTIONS.items():
        cells, shape = measure(function, sizes, args.limit, args.repeats)
        rows.append([name, *cells, f"worst: {shape}"])
    widths = [max(len(row[i]) for row in [*rows, [*header, ""]]) for i in range(len(header) + 1)]
    print("  ".join(cell.ljust(width) for cell, width in zip([*header, ""], widths, strict=True)))
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
