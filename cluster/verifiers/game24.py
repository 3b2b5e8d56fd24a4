"""Checks a proposed Game of 24 expression: right numbers, each once, value exactly 24.

Only the model's expression is checked; nothing here searches for a solution (DESIGN.md,
"Verifiers judge; they do not solve").
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar

from cluster.types import Candidate, Problem, TaskFamily, Verdict
from cluster.verifiers.arithmetic import (
    MAX_NUMBER_DIGITS,
    ExpressionError,
    evaluate,
    format_value,
    literals,
    parse_expression,
)
from cluster.verifiers.base import Verifier, register_verifier

TARGET = 24
GAME24_NUMBERS = 4
# Right numbers but wrong value is closer than a malformed or number-breaking answer; the
# small credit lets a search prefer such branches without ever letting them pass.
RIGHT_NUMBERS_SCORE = 0.25

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


@register_verifier
class Game24Verifier(Verifier):
    """Passes a candidate whose final expression makes 24 from the problem's four numbers.

    Scores: 1.0 when it does; RIGHT_NUMBERS_SCORE when it uses exactly the four numbers but
    evaluates to something else; 0.0 when it is missing, malformed, divides by zero or uses
    the wrong numbers.
    """

    name: ClassVar[str] = "game24"

    def applies_to(self, problem: Problem) -> bool:
        numbers = problem.numbers
        return (
            problem.task is TaskFamily.GAME24
            and numbers is not None
            and len(numbers) == GAME24_NUMBERS
            and all(isinstance(number, int) for number in numbers)
            and _readable(numbers)
        )

    async def verify(self, problem: Problem, candidate: Candidate) -> Verdict:
        if not self.applies_to(problem) or problem.numbers is None:
            return self.abstain("not a Game of 24 problem with four numbers")
        # A scan of the whole chain: off the event loop.
        expression = await asyncio.to_thread(_candidate_expression, candidate)
        if expression is None:
            return self.verdict(0.0, False, "no arithmetic expression found in the answer")
        check = check_game24(expression, problem.numbers)
        if check.ok:
            return self.verdict(1.0, True, check.reason)
        evaluated_with_right_numbers = check.uses_numbers and check.value is not None
        score = RIGHT_NUMBERS_SCORE if evaluated_with_right_numbers else 0.0
        return self.verdict(score, False, check.reason)


def _readable(numbers: Sequence[int]) -> bool:
    """Whether every number fits the parser's bound on digits: a larger one can never be named
    in an expression or step (and str() of over 4,300 digits raises)."""
    return all(abs(number) < 10**MAX_NUMBER_DIGITS for number in numbers)


def _candidate_expression(candidate: Candidate) -> str | None:
    # The extracted answer is the model's own final statement; the full text is the fallback.
    if candidate.answer:
        expression = extract_game24_expression(candidate.answer)
        if expression is not None:
            return expression
    return extract_game24_expression(candidate.text)


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


def number_text(value: Fraction) -> str:
    """A number as steps write it: "13", "-2", "13/4"."""
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def apply_step(pool: Sequence[Fraction], step: Game24Step) -> tuple[list[Fraction], str | None]:
    """The pool after the step (the step's claimed result replacing its two operands) and
    what is wrong with the step, if anything: operands not in the pool, wrong arithmetic, a
    wrong list of numbers left."""
    remaining = list(pool)
    for operand in (step.a, step.b):
        if operand not in remaining:
            return remaining, f"{number_text(operand)} is not among the numbers left"
        remaining.remove(operand)
    remaining.append(step.claimed)
    value = step.true_value()
    stated = f"{number_text(step.a)} {step.op} {number_text(step.b)}"
    if value is None:
        return remaining, f"{stated} divides by zero"
    if value != step.claimed:
        return remaining, f"{stated} is {number_text(value)}, not {number_text(step.claimed)}"
    if step.left is not None and Counter(step.left) != Counter(remaining):
        listed = " ".join(number_text(n) for n in sorted(remaining))
        return remaining, f"the numbers left are {listed}"
    return remaining, None


@register_verifier
class Game24StepsVerifier(Verifier):
    """Checks every step of a Game of 24 chain exactly; says nothing about the final answer.

    Score: the share of steps that are right up to the first wrong one (a wrong step makes
    everything after it meaningless). Abstains when the chain has no steps in the format.
    """

    name: ClassVar[str] = "game24_steps"
    judges_answer: ClassVar[bool] = False

    def applies_to(self, problem: Problem) -> bool:
        numbers = problem.numbers
        return problem.task is TaskFamily.GAME24 and numbers is not None and _readable(numbers)

    async def verify(self, problem: Problem, candidate: Candidate) -> Verdict:
        if not self.applies_to(problem) or problem.numbers is None:
            return self.abstain("not a Game of 24 problem with numbers a step can name")
        steps = [step for line in candidate.text.splitlines() if (step := parse_game24_step(line))]
        if not steps:
            return self.abstain("no steps of the form 'a op b = c (left: ...)'")
        pool = [Fraction(n) for n in problem.numbers]
        for index, step in enumerate(steps):
            pool, problem_found = apply_step(pool, step)
            if problem_found is not None:
                return self.verdict(index / len(steps), False, f"step {index + 1}: {problem_found}")
        return self.verdict(1.0, True, f"all {len(steps)} steps are right")
