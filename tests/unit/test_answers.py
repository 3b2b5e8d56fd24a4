"""Answer parsing, extraction, normalisation and voting on realistic model output."""

from __future__ import annotations

from fractions import Fraction

import pytest

from cluster.answers import (
    answers_equivalent,
    extract_answer,
    majority_vote,
    normalize_answer,
    parse_number,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("72", Fraction(72)),
        ("-3", Fraction(-3)),
        ("\u22123", Fraction(-3)),
        ("1,234", Fraction(1234)),
        ("$1,234.50", Fraction(246900, 200)),
        ("-$5", Fraction(-5)),
        ("0.5", Fraction(1, 2)),
        (".25", Fraction(1, 4)),
        ("3/4", Fraction(3, 4)),
        ("50%", Fraction(1, 2)),
        ("2 1/2", Fraction(5, 2)),
        ("1e3", Fraction(1000)),
        ("72.00", Fraction(72)),
        ("\\frac{1}{2}", Fraction(1, 2)),
        ("  42  ", Fraction(42)),
    ],
)
def test_parse_number_reads_exact_values(text: str, expected: Fraction) -> None:
    assert parse_number(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "1/0", "3,4,5", "--5", "12 apples", "1e999999", "9" * 5000])
def test_parse_number_rejects_non_numbers(text: str) -> None:
    assert parse_number(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            ("Natalia sold 48/2 = 24 clips in May.\nShe earned 0.2 x 50 = $10.\nThe answer is 10."),
            "10",
        ),
        ("She sold 48 + 24 = 72 clips altogether.\n#### 72", "72"),
        ("So each gets \\boxed{\\frac{1}{2}} of the pizza.", "\\frac{1}{2}"),
        ("The final answer is: **$18**.", "$18"),
        ("**Answer:** 42", "42"),
        ("The answer is 3.5 dollars, since each costs half.", "3.5 dollars"),
        ("First the answer is 5. Then I check again. The answer is 6.", "6"),
        ("The answer is not clear yet. Adding up, the total is 7 apples.", "7"),
        ("#### Step 2\nSo she has 5 left", "5"),
        ("He has 10 - 3 left", "3"),
        ("The temperature is -3 now", "-3"),
        ("Total: 48/2=24", "24"),
        ("answer: \\boxed{72} is what we get. The answer is 70.", "72"),
    ],
)
def test_extract_answer_from_chains(text: str, expected: str) -> None:
    assert extract_answer(text) == expected


def test_extract_answer_returns_none_without_any_answer() -> None:
    assert extract_answer("I am not sure how to solve this.") is None


@pytest.mark.parametrize(
    ("answer", "key"),
    [
        ("$1,000", "1000"),
        ("1000", "1000"),
        ("0.5", "1/2"),
        ("1/2", "1/2"),
        ("50%", "1/2"),
        ("50 percent", "1/2"),
        ("10 dollars", "10"),
        ("**72**", "72"),
        ("\\boxed{72}", "72"),
        ("72.00", "72"),
        ("x = 5", "5"),
        ("-0.75", "-3/4"),
        ("The Cat.", "cat"),
        ("  an   Apple pie ", "apple pie"),
    ],
)
def test_normalize_answer(answer: str, key: str) -> None:
    assert normalize_answer(answer) == key


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("$1,000", "1000"),
        ("0.5", "1/2"),
        ("50%", "0.5"),
        # A percentage also matches its bare number: references omit the sign.
        ("50%", "50"),
        ("\\frac{3}{4}", "0.75"),
        ("18 dollars", "$18.00"),
        ("The Cat", "cat."),
    ],
)
def test_answers_equivalent(a: str, b: str) -> None:
    assert answers_equivalent(a, b)
    assert answers_equivalent(b, a)


@pytest.mark.parametrize(("a", "b"), [("0.5", "50"), ("72", "27"), ("cat", "dog"), ("1", "one")])
def test_answers_not_equivalent(a: str, b: str) -> None:
    assert not answers_equivalent(a, b)


def test_majority_vote_groups_equal_values() -> None:
    assert majority_vote(["$10", "12", "10.0", "10 dollars", "12"]) == ("$10", 3)


def test_majority_vote_breaks_ties_by_first_occurrence() -> None:
    assert majority_vote(["12", "10", "10", "12.0"]) == ("12", 2)


def test_majority_vote_ignores_none() -> None:
    assert majority_vote([None, "7", None, None]) == ("7", 1)


def test_majority_vote_with_nothing_to_count() -> None:
    assert majority_vote([]) == (None, 0)
    assert majority_vote([None, None, "  "]) == (None, 0)
