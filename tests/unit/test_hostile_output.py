"""Every function that reads model output finishes on 100,000 characters of hostile text (the
old quadratic and cubic scans took minutes on such input, or raised), and still reads the
normal answer written after it.

Time is CPU time of this process, with a bound far above what linear code needs (tens of
milliseconds here) and far below what the quadratic code needed, so a busy machine cannot
make these tests flaky. bench/parsers.py measures the growth itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from cluster.answers import answers_equivalent, extract_answer, extract_stated_answer, normalize_answer
from cluster.tasks.game24 import check_game24, extract_game24_expression, parse_game24_step
from cluster.types import Candidate, ChatMessage, Problem
from cluster.verifiers.arithmetic import (
    ArithmeticStepVerifier,
    ExpressionError,
    check_claim,
    find_arithmetic_claims,
    parse_expression,
)
from cluster.verifiers.game24 import Game24StepsVerifier, Game24Verifier
from cluster.verifiers.numeric import NumericAnswerVerifier

pytestmark = pytest.mark.unit

CHARS = 100_000
CPU_SECONDS = 5.0


def _repeated(unit: str) -> str:
    return (unit * (CHARS // len(unit) + 1))[:CHARS]


def _padded(marker: str) -> str:
    return marker + " " * (CHARS - len(marker) - 1) + "x"


HOSTILE = {
    **{
        repr(unit): _repeated(unit)
        for unit in (
            "1+",
            "(",
            "(1+",
            "\\boxed{",
            "answer is ",
            "The answer is not ",
            "#### ",
            "9",
            "1,",
            "1 = ",
            "<<1+1=",
            "12 * 3 = 36. ",
        )
    },
    **{f"{marker!r} + spaces": _padded(marker) for marker in ("####", "1 = ", "-")},
}

GAME24 = Problem(
    messages=(ChatMessage("user", "Use 4 9 10 13 to make 24."),),
    task="game24",
    numbers=(4, 9, 10, 13),
)
MATH = Problem(messages=(ChatMessage("user", "How many clips?"),), task="math", reference="72")


def _cpu_seconds(call: Callable[[], object]) -> tuple[object, float]:
    start = time.process_time()
    result = call()
    return result, time.process_time() - start


def _verdict(verifier: Any, problem: Problem, text: str) -> Any:
    candidate = Candidate(node_id="n", text=text, answer=None)
    return asyncio.run(verifier.verify(problem, candidate))


Check = tuple[str, Callable[[str], Any], Callable[[Any], bool]]


def _passes(verifier: Any, problem: Problem, ending: str) -> Check:
    """The verifier must pass the chain: the normal ending is right, and nothing before it is wrong."""
    return ending, lambda text: _verdict(verifier, problem, text), lambda verdict: verdict.passed is True


# Each check: what to call on (hostile text + a normal ending), and what it must return.
CHECKS: dict[str, Check] = {
    "extract_answer": ("\nThe answer is 72.", extract_answer, lambda found: found == "72"),
    "extract_stated_answer": ("\n#### 72", extract_stated_answer, lambda found: found == "72"),
    "normalize_answer": ("", normalize_answer, lambda key: isinstance(key, str)),
    "answers_equivalent": ("", lambda text: answers_equivalent(text, "72"), lambda same: same is False),
    "find_arithmetic_claims": (
        "\n12 * 3 = 36.",
        find_arithmetic_claims,
        lambda claims: [(c.expression, c.correct) for c in claims][-1] == ("12 * 3", True),
    ),
    "check_claim": ("", lambda text: check_claim(text, "36", text), lambda claim: claim is None),
    "extract_game24_expression": (
        "\n(10 - 4) * (13 - 9) = 24",
        extract_game24_expression,
        lambda found: found == "(10 - 4) * (13 - 9)",
    ),
    "check_game24": ("", lambda text: check_game24(text, (4, 9, 10, 13)), lambda check: not check.ok),
    "parse_game24_step": ("", parse_game24_step, lambda step: step is None),
    "numeric verifier": _passes(NumericAnswerVerifier(), MATH, "\nThe answer is 72."),
    "arithmetic verifier": _passes(ArithmeticStepVerifier(), MATH, "\n12 * 3 = 36."),
    "game24 verifier": _passes(Game24Verifier(), GAME24, "\n(10 - 4) * (13 - 9) = 24"),
    "game24_steps verifier": _passes(Game24StepsVerifier(), GAME24, "\n10 - 4 = 6 (left: 6 9 13)"),
}


@pytest.mark.parametrize("name", CHECKS)
def test_hostile_output_is_read_in_bounded_time(name: str) -> None:
    ending, function, expected = CHECKS[name]
    for shape, text in HOSTILE.items():
        result, seconds = _cpu_seconds(lambda text=text: function(text + ending))
        assert seconds < CPU_SECONDS, f"{name} took {seconds:.1f} s of CPU on {shape}"
        assert expected(result), f"{name} on {shape} + {ending!r} returned {result!r}"


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_parse_expression_refuses_long_text_at_once(text: str) -> None:
    start = time.process_time()
    with pytest.raises(ExpressionError, match="longer than"):
        parse_expression(text)
    assert time.process_time() - start < CPU_SECONDS
