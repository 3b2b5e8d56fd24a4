"""Symbolic comparison of math answers with `math-verify`, within bounds that hold in any thread.

The exact reading in `cluster.answers` settles plain numbers ("$1,234.50", "50%", "3/4"). What
it cannot read (\\sqrt{4}, 2\\pi, sets, intervals, x^2+2x+1) is compared here by math-verify,
which parses LaTeX and plain expressions into SymPy and compares them.

math-verify's own timeouts use SIGALRM: they fail outside the main thread (Ray replicas,
executor threads) and cannot stop a computation that holds the GIL anyway (SymPy building
9^(9^9) as an exact integer froze the whole process in a test here). So they are off
(`parsing_timeout=None`, `timeout_seconds=None`) and the bounds are ours: short answers only,
text that looks like mathematics rather than words (SymPy reads "cat" as c*a*t, equal to
"act"), and a parsed expression is compared only if it is small and every node of it is on an
allow-list where powers cannot grow numbers past a few thousand digits.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

# Final answers are short; longer text is compared as text by the caller.
MAX_ANSWER_CHARS = 100
# Nodes of a parsed expression.
MAX_NODES = 100
# Numerators and denominators of literals (about 30 decimal digits).
MAX_LITERAL_BITS = 100
# |exponent| of a power with a numeric exponent; a power inside such a power may not grow.
MAX_EXPONENT = 100
# The same over a base with variables: SymPy expands (x+y+z)^n into O(n^2) terms and more.
MAX_SYMBOLIC_EXPONENT = 10

_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
# Two letters in a row outside LaTeX commands are a word, not a product of variables.
_WORD = re.compile(r"[A-Za-z]{2}")
# Mathematics has a digit, a LaTeX command or an operator; a lone "A" is a choice, not a symbol.
_MATH_SIGN = re.compile(r"[\d\\^_=+*/<>()\[\]{}-]")


def compare_symbolically(answer: str, reference: str) -> bool | None:
    """Whether math-verify finds `answer` equal to `reference`; None when it cannot read both
    as mathematics within the bounds (the caller then compares them as text).

    Not symmetric in general (math-verify treats the reference as gold: "x = 5" as a reference
    accepts "5"). Decimals are compared to math-verify's precision (\\sqrt{2} equals 1.414214),
    so use it only for what an exact comparison cannot read.
    """
    if not (_looks_mathematical(answer) and _looks_mathematical(reference)):
        return None
    gold, target = _parse(reference), _parse(answer)
    if not gold or not target:
        return None
    from math_verify import verify

    return bool(verify(list(gold), list(target), timeout_seconds=None))


def _looks_mathematical(text: str) -> bool:
    if not 0 < len(text) <= MAX_ANSWER_CHARS or _MATH_SIGN.search(text) is None:
        return False
    return _WORD.search(_LATEX_COMMAND.sub(" ", text)) is None


@lru_cache(maxsize=256)
def _parse(text: str) -> tuple[Any, ...]:
    """math-verify's readings of `text` (a SymPy object, its string form), the SymPy ones only if bounded."""
    # Imported here: SymPy takes seconds to import, and most answers never need it.
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    readings = parse(
        "\\boxed{" + text + "}",
        extraction_config=[LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()],
        parsing_timeout=None,
    )
    return tuple(reading for reading in readings if isinstance(reading, str) or _bounded(reading))


def _bounded(expression: Any) -> bool:
    import sympy

    allowed = (
        sympy.Number,
        sympy.Symbol,
        sympy.NumberSymbol,
        sympy.core.numbers.ImaginaryUnit,
        sympy.core.numbers.ComplexInfinity,
        sympy.Add,
        sympy.Mul,
        sympy.Pow,
        sympy.Tuple,
        sympy.FiniteSet,
        sympy.Interval,
        sympy.Union,
        sympy.core.relational.Relational,
        sympy.Abs,
        sympy.exp,
        sympy.log,
        sympy.sin,
        sympy.cos,
        sympy.tan,
    )
    if not isinstance(expression, sympy.Basic):
        return False
    for count, node in enumerate(sympy.preorder_traversal(expression)):
        if count >= MAX_NODES or not isinstance(node, allowed):
            return False
        if isinstance(node, sympy.Rational) and max(abs(node.p), node.q).bit_length() > MAX_LITERAL_BITS:
            return False
        if isinstance(node, sympy.Pow) and not _bounded_power(node):
            return False
    return True


def _bounded_power(power: Any) -> bool:
    """A power whose value stays small: a small numeric exponent over a base without growing
    powers, or a symbolic exponent (x^n, 2^n) without powers in it."""
    import sympy

    exponent = power.exp
    if exponent.free_symbols:
        return not exponent.has(sympy.Pow)
    if not _small_number(exponent, MAX_SYMBOLIC_EXPONENT if power.base.free_symbols else MAX_EXPONENT):
        return False
    inner_powers = (inner for inner in sympy.preorder_traversal(power.base) if isinstance(inner, sympy.Pow))
    # Roots and reciprocals inside are fine; (2^100)^100^... is how a short text grows a huge number.
    return all(_small_number(inner.exp, 1) for inner in inner_powers)


def _small_number(value: Any, limit: int) -> bool:
    return bool(value.is_Number and value.is_finite and abs(value) <= limit)
