"""Final answers in model chains of thought: extraction, normalisation, comparison, voting.

Small models state one value in many shapes ("$1,234.50", "50%", "\\boxed{\\frac{1}{2}}",
"The answer is 10 dollars."). Grading and self-consistency voting must treat those shapes
as one answer, so numeric values are compared as exact `Fraction`s, never as floats: a float
would make 0.1 + 0.2 differ from 0.3 and split a vote that should be unanimous.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import NamedTuple

_UNICODE_MINUS = "\u2212"

# Thousands separators only in groups of three, so "3,4,5" (a list) is not read as 345.
_UINT = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)"
# Two exponent digits at most: "1e999999999" would otherwise build a gigantic integer.
_DECIMAL = rf"(?:{_UINT}(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d{{1,2}}(?!\d))?"
_NUMBER_BODY = rf"""
    (?P<sign>[-+])?\s*
    (?P<currency>[$€£¥₹])?\s*
    (?P<sign2>[-+])?\s*
    (?:
        (?P<whole>\d+)\s+(?P<mixed_num>\d+)\s*/\s*(?P<mixed_den>\d+)
      | (?P<num>{_DECIMAL})\s*/\s*(?P<den>{_DECIMAL})
      | (?P<value>{_DECIMAL})
    )
    (?P<percent>\s*%)?
"""
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
# GSM8K's "#### 72"; the number requirement keeps markdown headers ("#### Step 2") out.
_GSM8K_MARKER = re.compile(r"####\s*\**\s*(?P<rest>[-+$\u2212]?\s*[\d.][^\n]*)")
# The rest of the line is only looked at, so a later "answer is" on it is matched too.
_ANSWER_PHRASE = re.compile(
    r"\banswer\b\**\s*(?:is|would\s+be|will\s+be|:|=)\s*:?[\s*]*(?=(?P<rest>[^\n]*))",
    re.IGNORECASE,
)
# A period ends the sentence unless it is a decimal point ("3.5").
_SENTENCE_END = re.compile(r"\.(?!\d)|[!?;]|,\s|\s+(?:because|since|which)\b", re.IGNORECASE)
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
    if match is None:
        return None
    return _match_value(match)


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
    """Whether two answers say the same thing: equal values when both are numbers.

    A percentage also matches its bare number ("50%" matches "50" as well as "0.5"), because
    references for "what percent ..." questions are written without the sign.
    """
    first, second = _numeric_value(_clean_answer(a)), _numeric_value(_clean_answer(b))
    if first is not None and second is not None:
        return (
            first.value == second.value
            or (first.is_percent and first.value * 100 == second.value)
            or (second.is_percent and second.value * 100 == first.value)
        )
    return normalize_answer(a) == normalize_answer(b)


def majority_vote(answers: Sequence[str | None]) -> tuple[str | None, int]:
    """The most common answer (first occurrence of its key wins ties) and how many gave it.

    Returns one of the original strings, so callers can show the answer as the model wrote it.
    """
    counts: dict[str, int] = {}
    representatives: dict[str, str] = {}
    for answer in answers:
        if answer is None:
            continue
        key = normalize_answer(answer)
        if not key:
            continue
        representatives.setdefault(key, answer)
        counts[key] = counts.get(key, 0) + 1
    if not counts:
        return None, 0
    # max() keeps the first of equal counts, and dicts keep first-occurrence order.
    best = max(counts, key=counts.__getitem__)
    return representatives[best], counts[best]


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


def _clean_answer(answer: str) -> str:
    text = _tidy(answer)
    boxed = _last_boxed(text)
    if boxed is not None:
        text = boxed
    text = _clean_latex(text)
    text = _VARIABLE_PREFIX.sub("", text)
    return _tidy(text)


def _numeric_value(text: str) -> _Numeric | None:
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
    while text and text[-1] in _TRAILING_PUNCTUATION + _MARKDOWN + " ":
        text = text[:-1]
    return text.lstrip(_MARKDOWN + " ")


def _last_boxed(text: str) -> str | None:
    for match in reversed(list(_BOXED.finditer(text))):
        content = _braced_content(text, match.end())
        if content is not None and content.strip():
            return _tidy(content)
    return None


def _braced_content(text: str, start: int) -> str | None:
    """The text from `start` to the brace closing the one just before it, or None if unclosed."""
    depth = 1
    for index in range(start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[start:index]
    return None


def _last_gsm8k_marker(text: str) -> str | None:
    matches = list(_GSM8K_MARKER.finditer(text))
    if not matches:
        return None
    return _tidy(matches[-1]["rest"]) or None


def _last_answer_phrase(text: str) -> str | None:
    for match in reversed(list(_ANSWER_PHRASE.finditer(text))):
        candidate = _tidy(_SENTENCE_END.split(match["rest"], maxsplit=1)[0])
        if candidate and candidate.split()[0].lower() not in _HEDGES:
            return candidate
    return None


def _last_number(text: str) -> str | None:
    matches = list(_TEXT_NUMBER.finditer(text.replace(_UNICODE_MINUS, "-")))
    if not matches:
        return None
    return _tidy(matches[-1].group()) or None
