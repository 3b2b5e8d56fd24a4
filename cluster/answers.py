"""Final answers in model chains of thought: extraction, normalisation, comparison.

Small models state one value in many shapes ("$1,234.50", "50%", "\\boxed{\\frac{1}{2}}",
"The answer is 10 dollars."). Grading and self-consistency voting must treat those shapes
as one answer, so numeric values are compared as exact `Fraction`s, never as floats: a float
would make 0.1 + 0.2 differ from 0.3 and split a vote that should be unanimous. Answers that
are not plain numbers (\\sqrt{4}, sets, intervals, expressions) are compared by math-verify
(`cluster.symbolic`).

Every function here reads model output, so each is linear in its length or reads a bounded
part of it (bench/parsers.py measures that).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from fractions import Fraction
from typing import NamedTuple

from cluster.symbolic import compare_symbolically

_UNICODE_MINUS = "\u2212"

# Thousands separators only in groups of three, so "3,4,5" (a list) is not read as 345.
_UINT = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)"
# Two exponent digits at most: "1e999999999" would otherwise build a gigantic integer.
_DECIMAL = rf"(?:{_UINT}(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d{{1,2}}(?!\d))?"
# Possessive "\s*+": whitespace between the optional parts is never re-split on a failed match
# (with plain "\s*", "-" followed by n spaces and a letter costs n**3 steps).
_NUMBER_BODY = rf"""
    (?P<sign>[-+])?\s*+
    (?P<currency>[$€£¥₹])?\s*+
    (?P<sign2>[-+])?\s*+
    (?:
        (?P<whole>\d+)\s+(?P<mixed_num>\d+)\s*/\s*(?P<mixed_den>\d+)
      | (?P<num>{_DECIMAL})\s*/\s*(?P<den>{_DECIMAL})
      | (?P<value>{_DECIMAL})
    )
    (?P<percent>\s*%)?
"""
# A number with its unit ("$1,234,567.89 dollars per week") is short; longer text is not read
# as one (and int() refuses strings of over 4,300 digits anyway).
_MAX_NUMBER_CHARS = 100
_NUMBER_FULL = re.compile(rf"^\s*{_NUMBER_BODY}\s*$", re.VERBOSE)
_NUMBER_PREFIX = re.compile(rf"^\s*{_NUMBER_BODY}", re.VERBOSE)

# What may follow a number and still leave it a number: "10 dollars", "3 km/h", "2 sq. ft".
_UNIT_WORDS = re.compile(r"^[A-Za-z]+\.?(?:[\s/-]+[A-Za-z]+\.?){0,3}$")
_PERCENT_WORDS = frozenset({"percent", "per cent", "pct"})

_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_LATEX_FRAC_DIGITS = re.compile(r"\\[dt]?frac\s*(\d)\s*(\d)")
_LATEX_TEXT = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_LATEX_LITERALS = (
    ("\\$", "$"),
    ("\\%", "%"),
    ("{,}", ","),
    ("\\left", ""),
    ("\\right", ""),
    ("\\!", ""),
    ("\\,", ""),
    ("\\;", " "),
    ("\\ ", " "),
    ("\\cdot", "*"),
    ("\\times", "*"),
    ("\\div", "/"),
)
_MATH_DELIMITERS = (("\\(", "\\)"), ("\\[", "\\]"), ("$", "$"))

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE = re.compile(r"[{}]")
# GSM8K's "#### 72"; the number requirement keeps markdown headers ("#### Step 2") out.
# Possessive quantifiers: "####" followed by n spaces and no number costs n steps, not n**3.
_GSM8K_MARKER = re.compile(r"####\s*+\**+\s*+(?P<rest>[-+$\u2212]?\s*+[\d.][^\n]*)")
_ANSWER_PHRASE = re.compile(r"\banswer\b\**\s*(?:is|would\s+be|will\s+be|:|=)\s*:?[\s*]*", re.IGNORECASE)
# A final answer is a short phrase: only this much of the line after "the answer is" is read,
# so text repeating the phrase costs (repetitions x this), not (repetitions x line length).
_MAX_ANSWER_PHRASE_CHARS = 300
# A period ends the sentence unless it is a decimal point ("3.5"). A run of whitespace before
# "because" is tried once, from its start, not once per space.
_SENTENCE_END = re.compile(r"\.(?!\d)|[!?;]|,\s|(?<!\s)\s+(?:because|since|which)\b", re.IGNORECASE)
# "The answer is not clear yet" is commentary, not an answer.
_HEDGES = frozenset({"not", "that", "to", "below", "unclear", "unknown", "yet", "as", "in"})
# A leading minus belongs to the number only when it cannot be a subtraction ("10-3", "10 - 3").
_TEXT_NUMBER = re.compile(rf"(?<![\w.])(?:(?<![\d)]\s)-)?\$?{_UINT}(?:\.\d+)?(?:/\d+(?![\d/.]))?%?")
_VARIABLE_PREFIX = re.compile(r"^\s*[A-Za-z]\s*=\s*(?=\S)")
_ARTICLE = re.compile(r"^(?:a|an|the)\s+")
_WHITESPACE = re.compile(r"\s+")
_TRAILING_PUNCTUATION = ".,;:!?"
_MARKDOWN = "*`"


class _Numeric(NamedTuple):
    value: Fraction
    # Whether the text said "%" or "percent": graders accept "50%" for a reference of 50.
    is_percent: bool


def parse_number(text: str) -> Fraction | None:
    """The exact value of `text` if it is one number ("$1,234.50", "3/4", "50%", "1e3")."""
    match = _NUMBER_FULL.match(_clean_latex(text))
    return _match_value(match) if match is not None else None


def extract_answer(text: str) -> str | None:
    """The final answer stated in a chain of thought, or None when it states none.

    Explicit markers win over position: `\\boxed{}`, then GSM8K's "#### X", then the last
    "The (final) answer is X" / "Answer: X", and only then the last number in the text.
    """
    return extract_stated_answer(text) or _last_number(text)


def extract_stated_answer(text: str) -> str | None:
    """The answer only if the text states one explicitly (a box, "####", "The answer is").

    Tree search uses it to tell a finished chain from a step that merely mentions a number.
    """
    finders: tuple[Callable[[str], str | None], ...] = (_last_boxed, _last_gsm8k_marker, _last_answer_phrase)
    for finder in finders:
        found = finder(text)
        if found:
            return found
    return None


def normalize_answer(answer: str) -> str:
    """A canonical key for voting: "72", "-3/4" for numbers; cleaned lower-case text otherwise."""
    text = _clean_answer(answer)
    numeric = _numeric_value(text)
    if numeric is not None:
        return str(numeric.value)
    return _normalize_text(text)


def answers_equivalent(a: str, b: str) -> bool:
    """Whether two answers say the same thing; `b` is the reference when there is one.

    Numbers are compared exactly, as rationals, and that settles it: "0.333333" is not 1/3.
    A percentage also matches its bare number ("50%" matches "50" as well as "0.5"), because
    references for "what percent ..." questions are written without the sign. Other answers
    that math-verify reads are compared by it (\\sqrt{4} and 2, 2\\pi and \\pi \\cdot 2,
    {1, 2} and {2, 1}; (1, 2] and [1, 2] differ); the rest by their normalised text.
    """
    first, second = _numeric_value(_clean_answer(a)), _numeric_value(_clean_answer(b))
    if first is not None and second is not None:
        return (
            first.value == second.value
            or (first.is_percent and first.value * 100 == second.value)
            or (second.is_percent and second.value * 100 == first.value)
        )
    symbolic = compare_symbolically(_unboxed(a), _unboxed(b))
    if symbolic is not None:
        return symbolic
    return normalize_answer(a) == normalize_answer(b)


def _match_value(match: re.Match[str]) -> Fraction | None:
    if match["sign"] and match["sign2"]:
        return None
    try:
        value = _match_magnitude(match)
    except (ValueError, ZeroDivisionError):
        # Python refuses int() of very long digit strings; such text is no usable number.
        return None
    if match["percent"]:
        value /= 100
    negative = "-" in (match["sign"] or "", match["sign2"] or "")
    return -value if negative else value


def _match_magnitude(match: re.Match[str]) -> Fraction:
    if match["whole"] is not None:
        return int(match["whole"]) + Fraction(int(match["mixed_num"]), int(match["mixed_den"]))
    if match["num"] is not None:
        return _decimal(match["num"]) / _decimal(match["den"])
    return _decimal(match["value"])


def _decimal(text: str) -> Fraction:
    return Fraction(text.replace(",", ""))


def _clean_latex(text: str) -> str:
    text = text.replace(_UNICODE_MINUS, "-").strip()
    text = _LATEX_FRAC.sub(r"(\1)/(\2)", text)
    text = _LATEX_FRAC_DIGITS.sub(r"\1/\2", text)
    text = _LATEX_TEXT.sub(r"\1", text)
    for old, new in _LATEX_LITERALS:
        text = text.replace(old, new)
    text = _strip_math_delimiters(text.strip())
    # "\frac{1}{2}" became "(1)/(2)"; plain numbers need no grouping parentheses.
    return re.sub(r"\((\s*[-+]?[\d.,]+\s*)\)", r"\1", text)


def _strip_math_delimiters(text: str) -> str:
    for opening, closing in _MATH_DELIMITERS:
        wrapped = len(text) >= len(opening) + len(closing)
        if wrapped and text.startswith(opening) and text.endswith(closing):
            return text[len(opening) : len(text) - len(closing)].strip()
    return text


def _unboxed(answer: str) -> str:
    text = _tidy(answer)
    boxed = _last_boxed(text)
    return text if boxed is None else boxed


def _clean_answer(answer: str) -> str:
    text = _clean_latex(_unboxed(answer))
    text = _VARIABLE_PREFIX.sub("", text)
    return _tidy(text)


def _numeric_value(text: str) -> _Numeric | None:
    if len(text) > _MAX_NUMBER_CHARS:
        return None
    match = _NUMBER_FULL.match(text)
    remainder = ""
    if match is None:
        match = _NUMBER_PREFIX.match(text)
        if match is None:
            return None
        remainder = _WHITESPACE.sub(" ", text[match.end() :].strip().lower())
        if not _UNIT_WORDS.match(remainder):
            return None
    value = _match_value(match)
    if value is None:
        return None
    is_percent = bool(match["percent"])
    if not is_percent and remainder in _PERCENT_WORDS:
        return _Numeric(value / 100, True)
    return _Numeric(value, is_percent)


def _normalize_text(text: str) -> str:
    text = text.lower()
    for mark in _MARKDOWN + "_":
        text = text.replace(mark, "")
    text = _WHITESPACE.sub(" ", text).strip(string.punctuation + string.whitespace)
    return _ARTICLE.sub("", text).strip()


def _tidy(text: str) -> str:
    text = text.strip().strip(_MARKDOWN).strip()
    return text.rstrip(_TRAILING_PUNCTUATION + _MARKDOWN + " ").lstrip(_MARKDOWN + " ")


def _last_boxed(text: str) -> str | None:
    matches = list(_BOXED.finditer(text))
    if not matches:
        return None
    closing = _closing_braces(text)
    for match in reversed(matches):
        # The match ends with the box's opening brace.
        end = closing.get(match.end() - 1)
        if end is not None:
            content = text[match.end() : end]
            if content.strip():
                return _tidy(content)
    return None


def _closing_braces(text: str) -> dict[int, int]:
    """The index of the "}" closing each "{" that is closed, found in one pass over `text`."""
    closing: dict[int, int] = {}
    open_braces: list[int] = []
    for brace in _BRACE.finditer(text):
        if brace.group() == "{":
            open_braces.append(brace.start())
        elif open_braces:
            closing[open_braces.pop()] = brace.start()
    return closing


def _last_gsm8k_marker(text: str) -> str | None:
    matches = list(_GSM8K_MARKER.finditer(text))
    if not matches:
        return None
    return _tidy(matches[-1]["rest"]) or None


def _last_answer_phrase(text: str) -> str | None:
    for match in reversed(list(_ANSWER_PHRASE.finditer(text))):
        start = match.end()
        line_end = text.find("\n", start, start + _MAX_ANSWER_PHRASE_CHARS)
        rest = text[start : start + _MAX_ANSWER_PHRASE_CHARS if line_end == -1 else line_end]
        candidate = _tidy(_SENTENCE_END.split(rest, maxsplit=1)[0])
        if candidate and candidate.split()[0].lower() not in _HEDGES:
            return candidate
    return None


def _last_number(text: str) -> str | None:
    matches = list(_TEXT_NUMBER.finditer(text.replace(_UNICODE_MINUS, "-")))
    if not matches:
        return None
    return _tidy(matches[-1].group()) or None
