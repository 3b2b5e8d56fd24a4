"""Checks the arithmetic a chain of thought states ("48/2 = 24", "<<0.2*50=10>>").

Expressions are parsed by a small recursive-descent parser and evaluated with `Fraction`,
never with eval(): the text is model output, and floats would call 0.1 + 0.2 = 0.3 wrong.
"""

from __future__ import annotations

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
_TOKEN = re.compile(
    rf"""\s*(?:
        (?P<number>{_UINT}(?:\.\d+)?|\.\d+)
      | (?P<operator>[-+*/xX{_TIMES}{_DIVIDE}{_DOT}{_MINUS}])
      | (?P<paren>[()])
      | (?P<currency>\$)
      | (?P<percent>%)
    )""",
    re.VERBOSE,
)
# Bounds keep a pathological line from costing deep recursion or huge integers.
_MAX_TOKENS = 200
_MAX_DEPTH = 40


class ExpressionError(ValueError):
    """The text is not a well-formed arithmetic expression."""


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


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str


def parse_expression(text: str, *, strict: bool = False) -> Node:
    """Parse `text` into an expression tree.

    Lenient mode (chains of thought) accepts decimals, thousands separators, "$" before a
    number, "%" after one and unary minus. Strict mode (puzzles such as Game of 24) accepts
    only whole-number literals, the four binary operators and parentheses.
    """
    tokens = _tokenize(text, strict=strict)
    if not tokens:
        raise ExpressionError("empty expression")
    if len(tokens) > _MAX_TOKENS:
        raise ExpressionError(f"expression longer than {_MAX_TOKENS} tokens")
    return _Parser(tokens, strict=strict).parse()


def evaluate(node: Node) -> Fraction:
    """The exact value of `node`; ZeroDivisionError names the division that failed."""
    if isinstance(node, Number):
        return node.value
    if isinstance(node, Negate):
        return -evaluate(node.operand)
    left, right = evaluate(node.left), evaluate(node.right)
    if node.operator == "+":
        return left + right
    if node.operator == "-":
        return left - right
    if node.operator == "*":
        return left * right
    if right == 0:
        raise ZeroDivisionError(f"division by zero: {render(node)}")
    return left / right


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


def _tokenize(text: str, *, strict: bool) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise ExpressionError(f"unexpected {text[position:].lstrip()[:1]!r} in {text!r}")
        kind = match.lastgroup or ""
        token = _Token(kind, match.group(kind))
        _check_token_allowed(token, strict=strict)
        if kind != "currency":
            tokens.append(token)
        position = match.end()
    return tokens


def _check_token_allowed(token: _Token, *, strict: bool) -> None:
    if not strict:
        return
    if token.kind in ("currency", "percent"):
        raise ExpressionError(f"{token.text!r} is not allowed here")
    if token.kind == "number" and not token.text.isdigit():
        raise ExpressionError(f"only whole numbers are allowed, not {token.text!r}")


class _Parser:
    """expression := term (("+" | "-") term)*; term := factor (("*" | "/") factor)*."""

    def __init__(self, tokens: list[_Token], *, strict: bool) -> None:
        self._tokens = tokens
        self._position = 0
        self._depth = 0
        self._strict = strict

    def parse(self) -> Node:
        node = self._expression()
        if self._position < len(self._tokens):
            raise ExpressionError(f"unexpected {self._tokens[self._position].text!r}")
        return node

    def _peek_operator(self, allowed: str) -> str | None:
        if self._position >= len(self._tokens):
            return None
        token = self._tokens[self._position]
        if token.kind != "operator":
            return None
        operator = _CANONICAL_OPERATOR[token.text]
        return operator if operator in allowed else None

    def _expression(self) -> Node:
        node = self._term()
        while (operator := self._peek_operator("+-")) is not None:
            self._position += 1
            node = BinaryOp(operator, node, self._term())
        return node

    def _term(self) -> Node:
        node = self._factor()
        while (operator := self._peek_operator("*/")) is not None:
            self._position += 1
            node = BinaryOp(operator, node, self._factor())
        return node

    def _factor(self) -> Node:
        sign = self._peek_operator("+-")
        if sign is None:
            return self._primary()
        if self._strict:
            raise ExpressionError("a sign before a number is not allowed")
        self._position += 1
        operand = self._factor()
        return Negate(operand) if sign == "-" else operand

    def _primary(self) -> Node:
        if self._position >= len(self._tokens):
            raise ExpressionError("expression ends too early")
        token = self._tokens[self._position]
        self._position += 1
        if token.kind == "number":
            return self._number(token)
        if token.text == "(":
            return self._parenthesised()
        raise ExpressionError(f"unexpected {token.text!r}")

    def _number(self, token: _Token) -> Node:
        value = Fraction(token.text.replace(",", ""))
        next_token = self._tokens[self._position] if self._position < len(self._tokens) else None
        if next_token is not None and next_token.kind == "percent":
            self._position += 1
            return Number(value / 100, token.text + "%")
        return Number(value, token.text)

    def _parenthesised(self) -> Node:
        self._depth += 1
        if self._depth > _MAX_DEPTH:
            raise ExpressionError("parentheses nest too deeply")
        node = self._expression()
        if self._position >= len(self._tokens) or self._tokens[self._position].text != ")":
            raise ExpressionError("missing ')'")
        self._position += 1
        self._depth -= 1
        return node


# ---------------------------------------------------------------------------------------
# Finding claims in a chain of thought
# ---------------------------------------------------------------------------------------

# GSM8K calculator annotations: "<<48/2=24>>".
_ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
# A lone "=": not "==", "<=", ">=", "!=", "=>".
_EQUALS = re.compile(r"(?<![=<>!])=(?![=>])")
_STATED = re.compile(rf"\s*\$?\s*(?P<number>[-{_MINUS}]?{_UINT}(?:\.\d+)?)(?!\d)(?P<percent>\s*%)?")
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
        claims = find_arithmetic_claims(candidate.text)
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
