"""Answer extraction, normalisation and comparison on realistic model output."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from cluster.answers import (
    answers_equivalent,
    extract_answer,
    normalize_answer,
)

pytestmark = pytest.mark.unit


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


@pytest.mark.parametrize(
    ("answer", "key"),
    [
        ("$1,234.50", "2469/2"),
        ("-$5", "-5"),
        ("\u22123", "-3"),
        (".25", "1/4"),
        ("3/4", "3/4"),
        ("2 1/2", "5/2"),
        ("1e3", "1000"),
        ("\\frac{1}{2}", "1/2"),
        ("\\frac12", "1/2"),
        ("\\dfrac{3}{4}", "3/4"),
        # A list is not a number with thousands separators.
        ("3,4,5", "3,4,5"),
    ],
)
def test_normalize_answer_reads_exact_values(answer: str, key: str) -> None:
    assert normalize_answer(answer) == key


@pytest.mark.parametrize(
    ("a", "b", "equivalent"),
    [
        # Plain numbers are compared exactly, never to a precision.
        ("0.333333", "1/3", False),
        ("0.333333", "\\frac{1}{3}", False),
        ("0.30000000000000004", "0.3", False),
        ("1/3", "0.3333333333333333", False),
        ("$1,234.50", "1234.5", True),
        ("$1,234.50", "1234.05", False),
        ("50%", "50", True),
        ("50%", "5", False),
    ],
)
def test_numbers_are_compared_exactly(a: str, b: str, equivalent: bool) -> None:
    assert answers_equivalent(a, b) is equivalent
    assert answers_equivalent(b, a) is equivalent


# What math-verify newly reads: roots, pi, sets, intervals, polynomials, LaTeX units.
SYMBOLIC_CASES = [
    ("\\sqrt{4}", "2", True),
    ("\\boxed{\\sqrt{4}}", "2", True),
    ("3\\sqrt{2}", "\\sqrt{18}", True),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}", True),
    ("2\\pi", "\\pi \\cdot 2", True),
    ("x^2+2x+1", "(x+1)^2", True),
    ("\\{1,2\\}", "\\{2,1\\}", True),
    ("(1,2]", "(1,2]", True),
    ("(1,2]", "[1,2]", False),
    ("5\\text{ cm}", "5", True),
    ("\\sqrt{2}", "1.41", False),
    ("\\sqrt{2}", "\\sqrt{3}", False),
    # Words are not products of variables: "cat" is not c*a*t = "act".
    ("cat", "act", False),
]


@pytest.mark.parametrize(("a", "b", "equivalent"), SYMBOLIC_CASES)
def test_symbolic_answers(a: str, b: str, equivalent: bool) -> None:
    assert answers_equivalent(a, b) is equivalent
    assert answers_equivalent(b, a) is equivalent


def test_symbolic_comparison_works_in_a_worker_thread() -> None:
    # math-verify's default timeouts use SIGALRM, which raises outside the main thread (Ray
    # replicas, executors); ours must work there.
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda case: answers_equivalent(case[0], case[1]), SYMBOLIC_CASES))
    assert results == [equivalent for _, _, equivalent in SYMBOLIC_CASES]
    assert threading.current_thread() is threading.main_thread()


@pytest.mark.parametrize(
    "answer",
    [
        # Each is a few characters that SymPy would turn into a computation of hours (or
        # memory exhaustion) holding the GIL; they are compared as text instead.
        "9^{9^{9}}",
        "(2^{100})^{100}",
        "(10^{10})!",
        "(x+y+z+w)^{100}",
        "\\sum_{n=1}^{10^{12}} n^{2}",
    ],
)
def test_symbolic_comparison_refuses_huge_computations(answer: str) -> None:
    assert not answers_equivalent(answer, "1")
    assert answers_equivalent(answer, answer)
