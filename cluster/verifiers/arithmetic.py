"""Checks the arithmetic a chain of thought states ("48/2 = 24", "<<0.2*50=10>>").

Expressions are parsed by Python's own parser (`ast.parse(mode="eval")`) and evaluated by a
small walker with `Fraction`, never with eval(): the text is model output, and floats would
call 0.1 + 0.2 = 0.3 wrong. The text is first normalised to Python syntax by one regex scan
that reads the number literals exactly ("1,234", "$5", "50%", ".5") and puts a placeholder
(the literal's index) in each one's place, so Python never reads a number itself.
"""

from __future__ import annotations

import ast
import asyncio
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar

from cluster.types import Candidate, Problem, Verdict
from cluster.verifiers.base import Verifier, register_verifier

_TIMES = "\u00d7"
_DIVIDE = "\u00f7"
_DOT = "\u00b7"
_MINUS = "\u2212"
# The spellings of the four operators; "x" only in lenient mode ("6 x 4").
_CANONICAL_OPERATOR = {
    "+": "+",
    "-": "-",
    _MINUS: "-",
    "*": "*",
    "x": "*",
    "X": "*",
    _TIMES: "*",
    _DOT: "*",
    "/": "/",
    _DIVIDE: "/",
}

_UINT = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)"
# "0x10" is hexadecimal to Python and to a reader, not "0 times 10": refused.
_TOKEN = re.compile(
    rf"""\s*(?:
        (?P<hexadecimal>0[xX][0-9a-fA-F])
      | (?P<number>{_UINT}(?:\.\d+)?|\.\d+)(?P<percent>\s*%)?
      | (?P<operator>[-+*/xX{_TIMES}{_DIVIDE}{_DOT}{_MINUS}])
      | (?P<paren>[()])
      | (?P<currency>\$)
    )""",
    re.VERBOSE,
)
_BINARY_OPERATORS: dict[type[ast.operator], str] = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}

# Bounds: the text is model output, and one line must not cost deep recursion or huge integers.
# An expression is a calculation a person would write; far longer text is prose.
MAX_EXPRESSION_CHARS = 400
# Levels of the expression tree: each operator and sign adds one (parentheses that change
# nothing add none; Python's parser refuses more than 200 nested).
MAX_DEPTH = 100
# Digits of one number literal.
MAX_NUMBER_DIGITS = 40
# Numerator and denominator of every intermediate result (about 150 decimal digits): products
# of many long literals are refused instead of being computed.
MAX_RESULT_BITS = 512


class ExpressionError(ValueError):
    """The text is not a well-formed arithmetic expression (or is beyond the bounds)."""


@dataclass(frozen=True, slots=True)
class Number:
    value: Fraction
    text: str


@dataclass(frozen=True, slots=True)
class Negate:
    operand: Node


@dataclass(frozen=True, slots=True)
class BinaryOp:
    operator: str
    left: Node
    right: Node


Node = Number | Negate | BinaryOp


def parse_expression(text: str, *, strict: bool = False) -> Node:
    """Parse `text` into an expression tree.

    Lenient mode (chains of thought) accepts decimals, thousands separators, "$" before a
    number, "%" after one, unary signs and "x" for times. Strict mode (puzzles such as Game
    of 24) accepts only whole-number literals, the four binary operators and parentheses.
    Both read the unicode times, divide, middle-dot and minus signs. Python syntax that
    is not arithmetic (names, calls, `**`, `//`, `1_000`, `0x10`, `1e5`, `1j`, tuples,
    comparisons) is refused either way.
    """
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    source, numbers = _to_python(text, strict=strict)
    if not numbers:
        raise ExpressionError("empty expression" if not source else "no number in the expression")
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as error:
        raise ExpressionError(error.msg) from None
    return _Builder(numbers, strict=strict).build(tree.body, depth=1)


def evaluate(node: Node) -> Fraction:
    """The exact value of `node`.

    ZeroDivisionError names the division that failed; ExpressionError says an intermediate
    result grew past MAX_RESULT_BITS.
    """
    if isinstance(node, Number):
        return node.value
    if isinstance(node, Negate):
        return -evaluate(node.operand)
    left, right = evaluate(node.left), evaluate(node.right)
    if node.operator == "+":
        value = left + right
    elif node.operator == "-":
        value = left - right
    elif node.operator == "*":
        value = left * right
    elif right == 0:
        raise ZeroDivisionError(f"division by zero: {render(node)}")
    else:
        value = left / right
    if max(value.numerator.bit_length(), value.denominator.bit_length()) > MAX_RESULT_BITS:
        raise ExpressionError(f"an intermediate result has more than {MAX_RESULT_BITS} bits")
    return value


def literals(node: Node) -> list[Fraction]:
    """The number literals of `node`, left to right."""
    if isinstance(node, Number):
        return [node.value]
    if isinstance(node, Negate):
        return literals(node.operand)
    return literals(node.left) + literals(node.right)


def render(node: Node) -> str:
    """`node` as fully parenthesised text, for reasons shown to people."""
    if isinstance(node, Number):
        return node.text
    if isinstance(node, Negate):
        return f"-{render(node.operand)}"
    return f"({render(node.left)} {node.operator} {render(node.right)})"


def format_value(value: Fraction) -> str:
    """An integer as itself, other rationals as "p/q (~decimal)"."""
    if value.denominator == 1:
        return str(value.numerator)
    return f"{value} (~{float(value):.6g})"


def _to_python(text: str, *, strict: bool) -> tuple[str, list[Number]]:
    """`text` as Python source in which number i is written as the literal `i`, and the numbers.

    One left-to-right regex scan: linear in the length of `text`.
    """
    parts: list[str] = []
    numbers: list[Number] = []
    text = text.rstrip()
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise ExpressionError(f"unexpected {text[position:].lstrip()[:1]!r}")
        position = match.end()
        if match["number"] is not None:
            parts.append(str(len(numbers)))
            numbers.append(_number(match, strict=strict))
        elif match["operator"] is not None:
            if strict and match["operator"] in "xX":
                raise ExpressionError(f"{match['operator']!r} is not allowed here")
            parts.append(_CANONICAL_OPERATOR[match["operator"]])
        elif match["paren"] is not None:
            parts.append(match["paren"])
        elif match["currency"] is not None:
            if strict:
                raise ExpressionError("'$' is not allowed here")
        else:
            raise ExpressionError(f"{match.group().strip()!r} reads as a hexadecimal number")
    return " ".join(parts), numbers


def _number(match: re.Match[str], *, strict: bool) -> Number:
    literal = match["number"]
    digits = literal.replace(",", "")
    if sum(char.isdigit() for char in digits) > MAX_NUMBER_DIGITS:
        raise ExpressionError(f"a number with more than {MAX_NUMBER_DIGITS} digits")
    if strict and not literal.isdigit():
        raise ExpressionError(f"only whole numbers are allowed, not {literal!r}")
    value = Fraction(digits)
    if match["percent"] is None:
        return Number(value, literal)
    if strict:
        raise ExpressionError("'%' is not allowed here")
    return Number(value / 100, literal + "%")


class _Builder:
    """Turns the parsed Python expression into our tree, admitting only arithmetic."""

    def __init__(self, numbers: list[Number], *, strict: bool) -> None:
        self._numbers = numbers
        self._strict = strict

    def build(self, node: ast.expr, *, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise ExpressionError(f"expression nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, ast.Constant) and type(node.value) is int:
            # Only placeholders reach Python: the constant is the index of a number read above.
            return self._numbers[node.value]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            if self._strict:
                raise ExpressionError("a sign before a number is not allowed")
            operand = self.build(node.operand, depth=depth + 1)
            return Negate(operand) if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPERATORS:
            left = self.build(node.left, depth=depth + 1)
            right = self.build(node.right, depth=depth + 1)
            return BinaryOp(_BINARY_OPERATORS[type(node.op)], left, right)
        raise ExpressionError(f"not arithmetic: {type(node).__name__.lower()}")


# ---------------------------------------------------------------------------------------
# Finding claims in a chain of thought
# ---------------------------------------------------------------------------------------

# GSM8K calculator annotations: "<<48/2=24>>".
_ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
# A lone "=": not "==", "<=", ">=", "!=", "=>".
_EQUALS = re.compile(r"(?<![=<>!])=(?![=>])")
# Possessive whitespace: "=" followed by many spaces and no number is refused in one pass.
_STATED = re.compile(rf"\s*+\$?\s*+(?P<number>[-{_MINUS}]?{_UINT}(?:\.\d+)?)(?!\d)(?P<percent>\s*%)?")
_EXPRESSION_CHARS = frozenset(f"0123456789.,$%()+-*/xX {_TIMES}{_DIVIDE}{_DOT}{_MINUS}\t")
# How far left of "=" an expression may reach; longer runs are prose, not a calculation.
_MAX_LEFT_SPAN = 120


@dataclass(frozen=True, slots=True)
class ArithmeticClaim:
    """One "expression = result" statement and whether it holds."""

    expression: str
    stated: str
    correct: bool
    # The expression's exact value; None when it cannot be computed (division by zero).
    actual: Fraction | None


def find_arithmetic_claims(text: str) -> list[ArithmeticClaim]:
    """Every checkable "expression = number" claim in `text`, each distinct claim once."""
    claims: list[ArithmeticClaim] = []
    seen: set[tuple[str, str]] = set()
    for expression, stated, rhs_expression in _claim_texts(text):
        key = (re.sub(r"\s+", "", expression), stated.strip())
        if key in seen:
            continue
        claim = check_claim(expression, stated, rhs_expression)
        if claim is not None:
            seen.add(key)
            claims.append(claim)
    return claims


def check_claim(expression: str, stated: str, rhs_expression: str = "") -> ArithmeticClaim | None:
    """Judge `expression = stated`; None when `expression` is not a calculation at all.

    `rhs_expression` is the whole right-hand side when it continues past the number
    ("5 + 3 = 10 - 2"); the claim holds if the left side equals either reading, because
    chained working ("12 * 3 = 36 + 4 = 40") is written the same way.
    """
    try:
        node = parse_expression(expression)
        stated_values = _stated_values(stated)
    except ExpressionError:
        return None
    if not isinstance(node, BinaryOp):
        return None
    try:
        actual = evaluate(node)
    except ZeroDivisionError:
        return ArithmeticClaim(expression.strip(), stated.strip(), False, None)
    except ExpressionError:
        # Too large to be a calculation anyone checks by hand; not a claim we judge.
        return None
    correct = any(_matches(actual, value, stated) for value in stated_values)
    if not correct and rhs_expression:
        correct = _rhs_expression_equals(rhs_expression, actual)
    return ArithmeticClaim(expression.strip(), stated.strip(), correct, actual)


def _stated_values(stated: str) -> list[Fraction]:
    number = stated.strip().lstrip("$").strip().rstrip("%").strip().replace(_MINUS, "-")
    try:
        value = Fraction(number.replace(",", ""))
    except ValueError as error:
        raise ExpressionError(f"not a number: {stated!r}") from error
    # "50/200*100 = 25%" and "0.5*50 = 25%" are both common; accept either reading.
    return [value, value / 100] if stated.strip().endswith("%") else [value]


def _matches(actual: Fraction, stated_value: Fraction, stated_text: str) -> bool:
    if actual == stated_value:
        return True
    decimals = _decimal_places(stated_text)
    if decimals == 0:
        return False
    # A stated "3.33" for 10/3 is a correct rounding to the precision it shows.
    return abs(actual - stated_value) * 2 <= Fraction(1, 10**decimals)


def _decimal_places(stated_text: str) -> int:
    match = re.search(r"\.(\d+)", stated_text)
    return len(match.group(1)) if match else 0


def _rhs_expression_equals(rhs_expression: str, actual: Fraction) -> bool:
    try:
        node = parse_expression(rhs_expression)
        return isinstance(node, BinaryOp) and evaluate(node) == actual
    except (ExpressionError, ZeroDivisionError):
        return False


def _claim_texts(text: str) -> list[tuple[str, str, str]]:
    """(left side, stated number, whole right side) for each annotation and each "="."""
    found = [(left, right, "") for left, right in _ANNOTATION.findall(text)]
    # Annotations are removed so "48/2 = <<48/2=24>>24" is not also read as "48/2 = 24 ...".
    prose = _ANNOTATION.sub(" ", text)
    for equals in _EQUALS.finditer(prose):
        stated = _STATED.match(prose, equals.end())
        if stated is None:
            continue
        left = _calculation_before(prose, equals.start())
        if left is not None:
            found.append((left, stated.group(), _run_after(prose, equals.end())))
    return found


def _calculation_before(text: str, end: int) -> str | None:
    """The longest calculation that ends just before `end`, if there is one."""
    start = end
    while start > 0 and end - start < _MAX_LEFT_SPAN and text[start - 1] in _EXPRESSION_CHARS:
        start -= 1
    span = text[start:end]
    # The run may begin inside prose ("in 3 days, 12 * 3"): try later starts until one parses.
    for offset in _expression_starts(span):
        candidate = span[offset:].strip()
        try:
            node = parse_expression(candidate)
        except ExpressionError:
            continue
        return candidate if isinstance(node, BinaryOp) else None
    return None


def _expression_starts(span: str) -> list[int]:
    starts = []
    for index, char in enumerate(span):
        previous = span[index - 1] if index else " "
        begins_operand = char.isdigit() or char in "($"
        begins_sign = char in "-" + _MINUS and previous in " (\t"
        if (begins_operand or begins_sign) and not (previous.isdigit() or previous in ".,"):
            starts.append(index)
    return starts


def _run_after(text: str, start: int) -> str:
    end = start
    while end < len(text) and text[end] in _EXPRESSION_CHARS:
        end += 1
    return text[start:end].strip().rstrip(".,")


# ---------------------------------------------------------------------------------------
# The verifier
# ---------------------------------------------------------------------------------------

_MAX_LISTED_ERRORS = 3


@register_verifier
class ArithmeticStepVerifier(Verifier):
    """Scores a chain by the share of its stated calculations that are right.

    score = correct / total claims; passed only when every claim holds; passed=None with a
    neutral score when the chain states no calculation to check.
    """

    name: ClassVar[str] = "arithmetic"
    # Right arithmetic in every step does not make the final answer right.
    judges_answer: ClassVar[bool] = False

    async def verify(self, problem: Problem, candidate: Candidate) -> Verdict:
        # Linear, but a long chain is thousands of parses: off the event loop.
        claims = await asyncio.to_thread(find_arithmetic_claims, candidate.text)
        if not claims:
            return self.abstain("no arithmetic claims found")
        wrong = [claim for claim in claims if not claim.correct]
        correct = len(claims) - len(wrong)
        reason = f"{correct}/{len(claims)} arithmetic claims correct"
        if wrong:
            listed = "; ".join(_describe(claim) for claim in wrong[:_MAX_LISTED_ERRORS])
            more = len(wrong) - _MAX_LISTED_ERRORS
            reason += f"; wrong: {listed}" + (f"; and {more} more" if more > 0 else "")
        return self.verdict(correct / len(claims), not wrong, reason)


def _describe(claim: ArithmeticClaim) -> str:
    if claim.actual is None:
        return f"{claim.expression} = {claim.stated} (division by zero)"
    return f"{claim.expression} = {claim.stated} (is {format_value(claim.actual)})"
