"""Game of 24: make 24 from four numbers with + - * / and parentheses, each number used once.

The game's rules live here, once: how a puzzle is posed, how steps ("a op b = c") replay on
the numbers left, how an expression is found in a chain and checked exactly (as rationals).
The step grammar offers only steps on the numbers left and leaves out the steps already
proposed at a node; it never knows which step is right (the verifiers judge, the model
chooses: nothing here searches for a solution).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import permutations
from typing import NamedTuple

from cluster.config import TaskSettings
from cluster.tasks.base import InvalidProblem, Task, register_task
from cluster.tasks.steps import Step, StepChoice, StepFormat, StepRequest
from cluster.types import ChatMessage, Completion, Problem
from cluster.verifiers.arithmetic import (
    MAX_NUMBER_DIGITS,
    ExpressionError,
    evaluate,
    format_value,
    literals,
    parse_expression,
)

TARGET = 24
GAME24_NUMBERS = 4

# At most 6 digits a number: longer ones make no puzzle, and past 4,300 digits int() refuses them.
_PUZZLE = re.compile(r"^\s*(\d{1,6})\s+(\d{1,6})\s+(\d{1,6})\s+(\d{1,6})\s*$")


@register_task
class Game24Task(Task):
    name = "game24"
    instructions = (
        "Use each of the four given numbers exactly once, with + - * / and parentheses, "
        "to make 24. Work one step per line: combine two of the numbers left into one, "
        "written as 'a op b = c (left: the numbers left)', until one number is left. "
        "Then finish with one line of the form 'Answer: <expression> = 24'. "
        "The layout, shown for the numbers 2 3 4 8:\n"
        "2 * 3 = 6 (left: 4 6 8)\n8 - 4 = 4 (left: 4 6)\n6 * 4 = 24 (left: 24)\n"
        "Answer: (2 * 3) * (8 - 4) = 24"
    )
    # One line per step, held to its grammar by structured output, and proposed greedily:
    # sampled at the effort's temperature the model gets a step's arithmetic wrong about
    # twice as often (README, Game of 24).
    settings = TaskSettings(step_delimiter="\n", step_temperature=0.0)
    verifiers = ("game24_steps", "game24", "arithmetic")
    excludes_tried_steps = True

    def pose(self, messages: Sequence[ChatMessage], reference: str | None = None) -> Problem:
        problem = Problem(tuple(messages), self.name, reference=reference)
        match = _PUZZLE.match(problem.question)
        if match is None:
            raise InvalidProblem(
                "task game24 expects the last user message to be four whole numbers (up to 6 digits) "
                f"separated by spaces, like '4 9 10 13'; got {problem.question[:60]!r}"
            )
        return Problem(problem.messages, self.name, tuple(int(n) for n in match.groups()), reference)

    def step_format(self, problem: Problem, settings: TaskSettings) -> StepFormat:
        return Game24Steps(problem, settings.step_delimiter, self.extract_answer, settings.step_temperature)

    def extract_answer(self, text: str) -> str | None:
        return extract_game24_expression(text)

    def labelled(self, problem: Problem) -> bool:
        # A puzzle labels itself: its numbers are all grading needs.
        return problem.numbers is not None

    def is_correct(self, answer: str, problem: Problem) -> bool:
        # The answer's last arithmetic expression is the proposal, as the game24 verifier reads it.
        expression = extract_game24_expression(answer)
        return (
            expression is not None
            and problem.numbers is not None
            and check_game24(expression, problem.numbers).ok
        )


# --- expressions: "(13 - 9) * (10 - 4)" -------------------------------------------

# An expression over four numbers is far shorter ("((10 - 4) * (13 - 9))" has 21 characters).
MAX_GAME24_EXPRESSION_CHARS = 100

_OPERATOR_CHARS = "+-*/xX\u00d7\u00f7\u00b7\u2212"
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_LATEX_REPLACEMENTS = (
    ("\\times", "*"),
    ("\\cdot", "*"),
    ("\\div", "/"),
    ("\\left", ""),
    ("\\right", ""),
)
# "x" as a multiplication sign stands between operands, never inside a word ("box").
_STANDALONE_X = re.compile(r"(?<=[\d)\s])[xX](?=[\s\d(])")
# A run of expression characters on one line, starting with an operand.
# Letters never belong to a segment: a multiplication "x" was turned into "*" beforehand.
_SEGMENT = re.compile(r"[\d(][\d \t()+\-*/\u00d7\u00f7\u00b7\u2212]*")


@dataclass(frozen=True, slots=True)
class Game24Check:
    ok: bool
    # The expression's exact value; None when it is malformed or divides by zero.
    value: Fraction | None
    reason: str
    # Whether the expression parsed and used exactly the given numbers, each once.
    uses_numbers: bool = False


def extract_game24_expression(text: str) -> str | None:
    """The last segment of `text` that looks like an arithmetic expression on numbers.

    A trailing "= 24" is not part of the segment. A segment with prose glued to its front
    ("Step 1 (3 + 3) * 4") is trimmed to its longest well-formed tail; one that never parses
    is returned as is, so that the check reports it as malformed.
    """
    prepared = _prepare(text)
    segments = [_tidy_segment(match.group()) for match in _SEGMENT.finditer(prepared)]
    expressions = [segment for segment in segments if _looks_like_expression(segment)]
    if not expressions:
        return None
    return _well_formed_tail(expressions[-1])


def check_game24(expression: str, numbers: Sequence[int], *, target: int = TARGET) -> Game24Check:
    """Whether `expression` uses exactly `numbers` (each once) and evaluates to `target`."""
    body = _strip_result(expression)
    try:
        node = parse_expression(body, strict=True)
    except ExpressionError as error:
        return Game24Check(False, None, f"malformed expression {body!r}: {error}")
    problems = []
    mismatch = _number_mismatch([int(value) for value in literals(node)], numbers)
    if mismatch is not None:
        problems.append(mismatch)
    value: Fraction | None
    try:
        value = evaluate(node)
    except ZeroDivisionError as error:
        value = None
        problems.append(f"{error} in {body!r}")
    except ExpressionError as error:
        value = None
        problems.append(f"{body!r}: {error}")
    if value is not None and value != target:
        problems.append(f"{body} evaluates to {format_value(value)}, not {target}")
    uses_numbers = mismatch is None
    if problems:
        return Game24Check(False, value, "; ".join(problems), uses_numbers)
    listed = ", ".join(str(number) for number in numbers)
    return Game24Check(True, value, f"{body} = {target} using {listed} once each", uses_numbers)


def _number_mismatch(used: Sequence[int], numbers: Sequence[int]) -> str | None:
    """Why `used` is not the multiset `numbers`, naming each offending number; None if it is."""
    used_counts, given_counts = Counter(used), Counter(numbers)
    if used_counts == given_counts:
        return None
    details = []
    for number in sorted(used_counts):
        if number not in given_counts:
            details.append(f"{number} is not one of the numbers")
        elif used_counts[number] > given_counts[number]:
            details.append(f"{number} used {used_counts[number]} times but given {given_counts[number]}")
    missing = sorted((given_counts - used_counts).elements())
    if missing:
        details.append("missing " + ", ".join(str(number) for number in missing))
    listed = " ".join(str(number) for number in numbers)
    return f"must use {listed} each exactly once: " + "; ".join(details)


def _strip_result(expression: str) -> str:
    """Drop a stated result ("... = 24") and keep the side that does the arithmetic."""
    sides = [side.strip() for side in expression.split("=")]
    for side in sides:
        if any(char in _OPERATOR_CHARS for char in side):
            return side
    return sides[0]


def _prepare(text: str) -> str:
    text = _LATEX_FRAC.sub(r"(\1)/(\2)", text)
    for old, new in _LATEX_REPLACEMENTS:
        text = text.replace(old, new)
    return _STANDALONE_X.sub("*", text)


def _tidy_segment(segment: str) -> str:
    segment = segment.strip().rstrip(_OPERATOR_CHARS + " \t")
    # Prose parentheses around an expression leave unmatched ones at its edges. Counted once
    # and trimmed by index: one pass, however many parentheses the text has.
    opened, closed = segment.count("("), segment.count(")")
    start, end = 0, len(segment)
    while end > start and segment[end - 1] == ")" and closed > opened:
        closed -= 1
        end -= 1
        while end > start and segment[end - 1] in " \t":
            end -= 1
    while start < end and segment[start] == "(" and opened > closed:
        opened -= 1
        start += 1
        while start < end and segment[start] in " \t":
            start += 1
    return segment[start:end]


def _looks_like_expression(segment: str) -> bool:
    has_operator = any(char in _OPERATOR_CHARS for char in segment)
    return has_operator and len(re.findall(r"\d+", segment)) >= 2


def _well_formed_tail(segment: str) -> str:
    # Only the last characters are tried: a bounded number of parses, each of bounded length,
    # however long the segment.
    for start in range(max(0, len(segment) - MAX_GAME24_EXPRESSION_CHARS), len(segment)):
        previous = segment[start - 1] if start else " "
        if segment[start] in "(0123456789" and not previous.isdigit():
            tail = segment[start:]
            try:
                parse_expression(tail, strict=True)
            except ExpressionError:
                continue
            if _looks_like_expression(tail):
                return tail
    return segment


# --- steps: "a op b = c (left: x y z)" -------------------------------------------------

# Numbers of bounded length: a step of 5,000-digit numbers is no step (and int() refuses it).
_STEP_NUMBER = rf"-?\d{{1,{MAX_NUMBER_DIGITS}}}(?:/\d{{1,{MAX_NUMBER_DIGITS}}})?"
_STEP = re.compile(
    rf"^\s*(?P<a>{_STEP_NUMBER}) (?P<op>[-+*/]) (?P<b>{_STEP_NUMBER}) = (?P<c>{_STEP_NUMBER})"
    # Every number left is followed by spaces or the ")": one way to split a run of digits.
    rf"(?: \(left: (?P<left> *(?:{_STEP_NUMBER}(?: +|(?=\))))*)\))?\s*$"
)
_OPERATIONS = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b if b else None,
}
# At most this many digits per number keeps a looping model from filling a step with digits.
_NUMBER = r"-?[0-9]{1,4}(/[0-9]{1,4})?"
_NUMBER_CHARS = len("-1234/5678")


@dataclass(frozen=True, slots=True)
class Game24Step:
    """One proposed step: two numbers combined into a claimed result, and the numbers left."""

    a: Fraction
    op: str
    b: Fraction
    claimed: Fraction
    # The numbers the step says are left; None when the step does not say.
    left: tuple[Fraction, ...] | None

    def true_value(self) -> Fraction | None:
        value: Fraction | None = _OPERATIONS[self.op](self.a, self.b)
        return value


@dataclass(frozen=True, slots=True)
class Number:
    """A number left in the game, with the expression that built it from the puzzle's numbers."""

    value: Fraction
    expression: str


class NotInPool(ValueError):
    """A step used a number that is not among the numbers left."""


def parse_game24_step(line: str) -> Game24Step | None:
    match = _STEP.match(line)
    if match is None:
        return None
    left = match.group("left")
    try:
        return Game24Step(
            Fraction(match.group("a")),
            match.group("op"),
            Fraction(match.group("b")),
            Fraction(match.group("c")),
            None if left is None else tuple(Fraction(n) for n in left.split()),
        )
    except ZeroDivisionError:
        # "3/0" is no number: the line is not a step.
        return None


def readable(numbers: Sequence[int]) -> bool:
    """Whether every number fits the parser's bound on digits: a larger one can never be named
    in an expression or step (and str() of over 4,300 digits raises)."""
    return all(abs(number) < 10**MAX_NUMBER_DIGITS for number in numbers)


def number_text(value: Fraction) -> str:
    """A number as steps write it: "13", "-2", "13/4"."""
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def starting_pool(numbers: Sequence[int]) -> list[Number]:
    return [Number(Fraction(n), str(n)) for n in numbers]


def combine(pool: Sequence[Number], step: Game24Step) -> list[Number]:
    """The numbers left after `step`: its claimed result (right or wrong) replaces its operands."""
    remaining = list(pool)
    operands = []
    for value in (step.a, step.b):
        index = next((i for i, number in enumerate(remaining) if number.value == value), None)
        if index is None:
            raise NotInPool(f"{number_text(value)} is not among the numbers left")
        operands.append(remaining.pop(index).expression)
    return [*remaining, Number(step.claimed, f"({operands[0]} {step.op} {operands[1]})")]


def step_error(step: Game24Step, after: Sequence[Number]) -> str | None:
    """What is wrong with a step that replayed: its arithmetic, or the numbers it says are left."""
    value = step.true_value()
    stated = f"{number_text(step.a)} {step.op} {number_text(step.b)}"
    if value is None:
        return f"{stated} divides by zero"
    if value != step.claimed:
        return f"{stated} is {number_text(value)}, not {number_text(step.claimed)}"
    if step.left is not None and Counter(step.left) != Counter(n.value for n in after):
        listed = " ".join(number_text(n) for n in sorted(number.value for number in after))
        return f"the numbers left are {listed}"
    return None


# --- the legal steps, as data: the step grammar offers them, the model-free control of the
# evaluation (cluster/evaluation/control.py) draws from them; neither knows which is right.


class Operation(NamedTuple):
    """One step the rules allow: two numbers left, as steps write them, and an operator."""

    a: str
    op: str
    b: str

    def value(self) -> Fraction:
        """The step's true result (a legal step never divides by zero)."""
        value: Fraction = _OPERATIONS[self.op](Fraction(self.a), Fraction(self.b))
        return value


def legal_operations(
    pool: Sequence[Fraction], tried: Iterable[tuple[Fraction, str, Fraction]] = ()
) -> list[Operation]:
    """Every step on the numbers left that the rules allow and that is not in `tried` (nor the
    mirror image of one, for + and *), each once, in a fixed order.

    Any two of the numbers left (a number used twice must be there twice), in either order,
    with + - * or /; dividing by zero is no step.
    """
    seen = set(tried)
    seen |= {(b, op, a) for a, op, b in seen if op in "+*"}
    return sorted(
        {
            Operation(number_text(pool[i]), op, number_text(pool[j]))
            for i, j in permutations(range(len(pool)), 2)
            for op in "+-*/"
            if (pool[i], op, pool[j]) not in seen and not (op == "/" and pool[j] == 0)
        }
    )


def claimed_result(pool: Sequence[Fraction]) -> str | None:
    """The result the rules fix for the next step: the step that uses the last two numbers
    claims the target (the verifiers decide whether the claim holds). None: the step states
    the result it computes."""
    return str(TARGET) if len(pool) == 2 else None


def replay(numbers: Sequence[int], steps: Sequence[str]) -> list[Number]:
    """The numbers left after `steps` (lines that are no step are passed over), each with the
    expression that built it."""
    pool = starting_pool(numbers)
    for line in steps:
        step = parse_game24_step(line)
        if step is not None:
            pool = combine(pool, step)
    return pool


class Game24Steps(StepFormat):
    """One line per step: the model writes "a op b = c" with a and b drawn from the numbers
    left (the grammar admits nothing else); the numbers left are appended as the game's
    bookkeeping, "(left: ...)". The chain ends when one number is left; its answer is the
    expression the steps built. Right or wrong, the verifiers decide."""

    def request(self, steps: Sequence[str], final: bool, tried: Sequence[str] = ()) -> StepRequest | None:
        pool = [number.value for number in self._replay(steps)]
        # Sampling without replacement among siblings: a step already proposed here (or its
        # mirror image, for + and *) is not offered again. The model still chooses. Only
        # steps this format wrote count (they list the numbers left), not free-text chains.
        proposed = [step for text in tried if (step := parse_game24_step(text)) and step.left is not None]
        operations = legal_operations(pool, [(step.a, step.op, step.b) for step in proposed])
        if not operations:
            return None
        claimed = claimed_result(pool)
        result = _NUMBER if claimed is None else claimed
        alternatives = "|".join(" ".join(re.escape(part) for part in operation) for operation in operations)
        # Every token is at least one character, and the end-of-sequence token is one more.
        result_chars = _NUMBER_CHARS if claimed is None else len(claimed)
        move_tokens = max(len(" ".join(operation)) for operation in operations) + 1
        working_out = StepChoice(
            regex=f"({alternatives})",
            max_tokens=move_tokens,
            rest_regex=f" = {result}",
            rest_max_tokens=len(" = ") + result_chars + 1,
        )
        return StepRequest(
            regex=f"({alternatives}) = {result}",
            max_tokens=move_tokens + len(" = ") + result_chars,
            temperature=self.temperature,
            choice=working_out,
        )

    def read(self, steps: Sequence[str], completion: Completion, final: bool) -> Step:
        text = completion.text.strip()
        step = parse_game24_step(text)
        if step is None:
            return Step(text, None, terminal=True)
        try:
            left = combine(self._replay(steps), step)
        except NotInPool:
            return Step(text, None, terminal=True)
        listed = " ".join(number_text(number.value) for number in left)
        rendered = f"{text} (left: {listed})"
        if len(left) > 1:
            return Step(rendered, None, terminal=False)
        return Step(rendered, _outer(left[0].expression), terminal=True)

    def _replay(self, steps: Sequence[str]) -> list[Number]:
        return replay(self.problem.numbers or (), steps)


def _outer(expression: str) -> str:
    return expression[1:-1] if expression.startswith("(") and expression.endswith(")") else expression
