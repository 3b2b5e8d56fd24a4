"""Numeric, arithmetic and Game of 24 verifiers, and the verifier registry."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest

from cluster.tasks.game24 import check_game24, extract_game24_expression, parse_game24_step
from cluster.types import Candidate, ChatMessage, Problem, Verdict
from cluster.verifiers import NEUTRAL_SCORE, UnknownVerifierError, Verifier, build_verifier, register_verifier
from cluster.verifiers.arithmetic import (
    MAX_DEPTH,
    MAX_EXPRESSION_CHARS,
    MAX_NUMBER_DIGITS,
    ArithmeticStepVerifier,
    ExpressionError,
    evaluate,
    find_arithmetic_claims,
    literals,
    parse_expression,
    render,
)
from cluster.verifiers.game24 import RIGHT_NUMBERS_SCORE, Game24Verifier
from cluster.verifiers.numeric import NumericAnswerVerifier

pytestmark = pytest.mark.unit

TIMES = "\u00d7"
DIVIDE = "\u00f7"
MINUS = "\u2212"


def math_problem(reference: str | None = None) -> Problem:
    question = ChatMessage("user", "Natalia sold 48 clips in April and half as many in May.")
    return Problem(messages=(question,), task="math", reference=reference)


def game24_problem(*numbers: int) -> Problem:
    question = ChatMessage("user", "Use " + " ".join(map(str, numbers)) + " to make 24.")
    return Problem(messages=(question,), task="game24", numbers=numbers)


def candidate(text: str, answer: str | None = None) -> Candidate:
    return Candidate(node_id="n1", text=text, answer=answer)


# --- numeric ------------------------------------------------------------------------------


async def test_numeric_passes_equal_answer_from_text() -> None:
    chain = "In May she sold 48/2 = 24 clips.\nAltogether 48 + 24 = 72.\nThe answer is 72."
    verdict = await NumericAnswerVerifier().verify(math_problem("72"), candidate(chain))
    assert (verdict.passed, verdict.score, verdict.verifier) == (True, 1.0, "numeric")
    assert "72" in verdict.reason


async def test_numeric_prefers_the_extracted_answer_and_compares_values() -> None:
    verdict = await NumericAnswerVerifier().verify(
        math_problem("1000"), candidate("... 999 ...", answer="$1,000.00")
    )
    assert verdict.passed is True


async def test_numeric_fails_wrong_answer() -> None:
    verdict = await NumericAnswerVerifier().verify(math_problem("72"), candidate("#### 70"))
    assert (verdict.passed, verdict.score) == (False, 0.0)
    assert "'70'" in verdict.reason and "'72'" in verdict.reason


async def test_numeric_fails_when_no_answer_is_found() -> None:
    verdict = await NumericAnswerVerifier().verify(math_problem("72"), candidate("I do not know."))
    assert (verdict.passed, verdict.score, verdict.reason) == (
        False,
        0.0,
        "no final answer found",
    )


async def test_numeric_reads_gsm8k_style_reference() -> None:
    reference = "She sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"
    verdict = await NumericAnswerVerifier().verify(math_problem(reference), candidate("The answer is 72."))
    assert verdict.passed is True


async def test_numeric_abstains_without_reference() -> None:
    verifier = NumericAnswerVerifier()
    assert not verifier.applies_to(math_problem(None))
    verdict = await verifier.verify(math_problem(None), candidate("The answer is 72."))
    assert (verdict.passed, verdict.score) == (None, NEUTRAL_SCORE)


# --- arithmetic ---------------------------------------------------------------------------


async def test_arithmetic_all_claims_right() -> None:
    chain = (
        "Natalia sold 48/2 = 24 clips in May.\n"
        "Tax is 0.2 x 50 = 10 dollars.\n"
        f"12 {TIMES} 3 = 36 and 48 {DIVIDE} 2 = 24.\n"
        "She paid $12 + $5 = $17.\n"
        "So (3 + 4) * 2 = 14."
    )
    verdict = await ArithmeticStepVerifier().verify(math_problem(), candidate(chain))
    assert (verdict.passed, verdict.score) == (True, 1.0)
    assert verdict.reason.startswith("6/6")


async def test_arithmetic_reports_wrong_claims() -> None:
    chain = "First 12 * 3 = 36.\nThen 36 + 5 = 40.\nThe answer is 40."
    verdict = await ArithmeticStepVerifier().verify(math_problem(), candidate(chain))
    assert verdict.passed is False
    assert verdict.score == 0.5
    assert "36 + 5 = 40 (is 41)" in verdict.reason


async def test_arithmetic_without_claims_abstains() -> None:
    verdict = await ArithmeticStepVerifier().verify(
        math_problem(), candidate("She sold some clips. The answer is 72.")
    )
    assert (verdict.passed, verdict.score) == (None, NEUTRAL_SCORE)
    assert verdict.reason == "no arithmetic claims found"


def test_gsm8k_annotations_are_checked_once() -> None:
    claims = find_arithmetic_claims(
        "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
        "Altogether she sold 48+24 = <<48+24=72>>72 clips.\n"
        "Wrong one: <<3*3=10>>"
    )
    assert [(c.expression, c.stated, c.correct) for c in claims] == [
        ("48/2", "24", True),
        ("48+24", "72", True),
        ("3*3", "10", False),
    ]


@pytest.mark.parametrize(
    ("text", "correct"),
    [
        ("10/3 = 3.33", True),  # rounded to the two decimals it states
        ("2/3 = 0.67", True),
        ("2/3 = 0.66", False),  # truncation is not rounding
        ("10/3 = 3", False),  # an integer result must be exact
        ("0.1 + 0.2 = 0.3", True),  # exact rationals, no float error
        (f"10 {MINUS} 15 = -5", True),
        ("1,000 * 2 = 2,000", True),
        ("50/200*100 = 25%", True),
        ("12 * 3 = 36 + 4 = 40", True),  # chained working: both links hold
        ("4/(2-2) = 3", False),
    ],
)
def test_arithmetic_claim_judgement(text: str, correct: bool) -> None:
    claims = find_arithmetic_claims(text)
    assert claims
    assert all(claim.correct for claim in claims) is correct


@pytest.mark.parametrize("text", ["x = 5", "a == b", "Total = 12 apples", "3 apples + 4 pears = 7 fruit"])
def test_arithmetic_ignores_non_calculations(text: str) -> None:
    assert find_arithmetic_claims(text) == []


def test_arithmetic_skips_prose_glued_to_the_expression() -> None:
    [claim] = find_arithmetic_claims("In 3 days, 12 * 3 = 36 clips.")
    assert (claim.expression, claim.actual) == ("12 * 3", Fraction(36))


# --- game of 24 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "numbers"),
    [
        ("8/(3-8/3)", (3, 3, 8, 8)),
        ("(10-4)*(13-9)", (4, 9, 10, 13)),
        ("(10 - 4) * (13 - 9) = 24", (4, 9, 10, 13)),
        (f"(10 {MINUS} 4) {TIMES} (13 {MINUS} 9)", (4, 9, 10, 13)),
        (f"8 {DIVIDE} (3 {MINUS} 8 {DIVIDE} 3)", (3, 3, 8, 8)),
    ],
)
def test_game24_accepts_correct_expressions(expression: str, numbers: tuple[int, ...]) -> None:
    check = check_game24(expression, numbers)
    assert check.ok, check.reason
    assert check.value == 24


def test_game24_reused_number() -> None:
    check = check_game24("(10-4)*(10-4)", (4, 9, 10, 13))
    assert not check.ok
    assert "10 used 2 times" in check.reason and "missing 9, 13" in check.reason


def test_game24_missing_number_even_when_value_is_24() -> None:
    check = check_game24("2*3*4", (1, 2, 3, 4))
    assert not check.ok
    assert check.value == 24
    assert "missing 1" in check.reason


def test_game24_extra_number() -> None:
    check = check_game24("(1+2+3)*4*5", (1, 2, 3, 4))
    assert not check.ok
    assert "5 is not one of the numbers" in check.reason


def test_game24_wrong_value() -> None:
    check = check_game24("(10+4)*(13-9)", (4, 9, 10, 13))
    assert not check.ok
    assert check.value == 56
    assert "evaluates to 56, not 24" in check.reason


def test_game24_division_by_zero() -> None:
    check = check_game24("4/(2-2)*6", (2, 2, 4, 6))
    assert not check.ok
    assert check.value is None
    assert "division by zero" in check.reason


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("((4+", "malformed"),
        ("(4+4)*(4-)", "malformed"),
        ("4 4 4 4", "malformed"),
        ("-4+28", "sign"),
        ("1.5*16", "whole numbers"),
        ("", "malformed"),
    ],
)
def test_game24_malformed(expression: str, fragment: str) -> None:
    check = check_game24(expression, (4, 4, 4, 4))
    assert not check.ok
    assert check.value is None
    assert fragment in check.reason


@pytest.mark.parametrize(
    ("text", "expression"),
    [
        ("So the answer is (10 - 4) * (13 - 9) = 24.", "(10 - 4) * (13 - 9)"),
        (
            "Step 1: 10 - 4 = 6\nStep 2: 13 - 9 = 4\nFinal: (10-4)*(13-9) = 24",
            "(10-4)*(13-9)",
        ),
        ("We need 24.\n8/(3-8/3)", "8/(3-8/3)"),
        (
            f"(10 {MINUS} 4) {TIMES} (13 {MINUS} 9) = 24",
            f"(10 {MINUS} 4) {TIMES} (13 {MINUS} 9)",
        ),
        ("6 x 4 = 24", "6 * 4"),
        ("\\boxed{(10-4)\\times(13-9)}", "(10-4)*(13-9)"),
        ("I have 4 boxes and 6 xylophones.", None),
    ],
)
def test_extract_game24_expression(text: str, expression: str | None) -> None:
    assert extract_game24_expression(text) == expression


async def test_game24_verifier_passes_text_around_expression() -> None:
    verdict = await Game24Verifier().verify(
        game24_problem(4, 9, 10, 13),
        candidate("Let me try. So the answer is (10 - 4) * (13 - 9) = 24."),
    )
    assert (verdict.passed, verdict.score, verdict.verifier) == (True, 1.0, "game24")


async def test_game24_verifier_gives_small_credit_for_right_numbers_wrong_value() -> None:
    verdict = await Game24Verifier().verify(
        game24_problem(4, 9, 10, 13), candidate("(10 + 4) * (13 - 9) = 24")
    )
    assert (verdict.passed, verdict.score) == (False, RIGHT_NUMBERS_SCORE)


async def test_game24_verifier_scores_zero_for_wrong_numbers() -> None:
    verdict = await Game24Verifier().verify(game24_problem(1, 2, 3, 4), candidate("2 * 3 * 4 = 24"))
    assert (verdict.passed, verdict.score) == (False, 0.0)


async def test_game24_verifier_without_expression() -> None:
    verdict = await Game24Verifier().verify(game24_problem(1, 2, 3, 4), candidate("I cannot find one."))
    assert (verdict.passed, verdict.score) == (False, 0.0)


async def test_game24_verifier_prefers_the_extracted_answer() -> None:
    verdict = await Game24Verifier().verify(
        game24_problem(3, 3, 8, 8),
        candidate("Maybe 8 * 3 = 24? No. ", answer="8/(3-8/3)"),
    )
    assert verdict.passed is True


async def test_game24_verifier_abstains_outside_game24() -> None:
    verifier = Game24Verifier()
    assert verifier.applies_to(game24_problem(3, 3, 8, 8))
    assert not verifier.applies_to(game24_problem(3, 3, 8))
    assert not verifier.applies_to(math_problem("24"))
    verdict = await verifier.verify(math_problem("24"), candidate("8/(3-8/3)"))
    assert verdict.passed is None


# --- registry -----------------------------------------------------------------------------


def test_build_verifier_by_name() -> None:
    assert isinstance(build_verifier("numeric"), NumericAnswerVerifier)
    assert isinstance(build_verifier("arithmetic"), ArithmeticStepVerifier)
    assert isinstance(build_verifier("game24"), Game24Verifier)


def test_build_verifier_unknown_name_lists_known_ones() -> None:
    with pytest.raises(UnknownVerifierError) as raised:
        build_verifier("nonsense")
    message = str(raised.value)
    assert "'nonsense'" in message
    for name in ("arithmetic", "game24", "numeric"):
        assert name in message


def test_register_verifier_rejects_a_taken_name() -> None:
    with pytest.raises(ValueError, match="taken"):

        @register_verifier
        class Impostor(Verifier):
            name = "numeric"

            async def verify(self, problem: Problem, candidate: Candidate) -> Verdict:
                return self.abstain("never")


# --- the expression parser ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1,234 + 0.5", Fraction(2469, 2)),
        ("$12 + $5", Fraction(17)),
        ("50% * 30", Fraction(15)),
        ("-(3 - 5)", Fraction(2)),
        ("--5", Fraction(5)),
        ("0.2 x 50", Fraction(10)),
        ("2x3", Fraction(6)),
        (f"12 {TIMES} 3 {DIVIDE} 4 \u00b7 2 {MINUS} 1", Fraction(17)),
        ("007 + 1", Fraction(8)),
        (".5 + .25", Fraction(3, 4)),
        # Literals are read from their text, never through a float.
        ("0.1 + 0.2", Fraction(3, 10)),
        ("12345678901234567890.123456789 * 1", Fraction("12345678901234567890.123456789")),
    ],
)
def test_lenient_expressions(text: str, value: Fraction) -> None:
    assert evaluate(parse_expression(text)) == value


@pytest.mark.parametrize(
    "text",
    [
        *("1_000 + 1", "0x10 + 1", "1e5 + 1", "1j + 1", "a + 1", "abs(1)", "2(3)", "(1)(2)"),
        *("2**3", "7//2", "1 < 2", "(1, 2)", "1 2", "((1)", "1 +", "% 1", "", "   "),
    ],
)
def test_python_syntax_that_is_not_arithmetic_is_refused(text: str) -> None:
    with pytest.raises(ExpressionError):
        parse_expression(text)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("6 x 4", "'x'"),
        ("$6 * 4", "'$'"),
        ("50% * 48", "'%'"),
        ("1,000 - 976", "whole numbers"),
        ("-4 + 28", "sign"),
    ],
)
def test_strict_mode_admits_whole_numbers_and_four_operators(text: str, fragment: str) -> None:
    with pytest.raises(ExpressionError, match=re.escape(fragment)):
        parse_expression(text, strict=True)
    parse_expression(text)  # lenient mode reads them all


def test_strict_mode_reads_unicode_operators() -> None:
    node = parse_expression(f"(10 {MINUS} 4) {TIMES} (13 {MINUS} 9) {DIVIDE} 1", strict=True)
    assert evaluate(node) == 24
    assert literals(node) == [10, 4, 13, 9, 1]
    assert render(node) == "(((10 - 4) * (13 - 9)) / 1)"


def test_expression_bounds() -> None:
    with pytest.raises(ExpressionError, match="characters"):
        parse_expression("1+" * (MAX_EXPRESSION_CHARS // 2) + "1")
    with pytest.raises(ExpressionError, match="digits"):
        parse_expression("9" * (MAX_NUMBER_DIGITS + 1) + " + 1")
    with pytest.raises(ExpressionError, match="deeper"):
        parse_expression("-" * MAX_DEPTH + "1")
    parse_expression("-" * (MAX_DEPTH - 1) + "1")
    # Every literal is within bounds, but their product is not: refused, not computed.
    longest = "9" * MAX_NUMBER_DIGITS
    node = parse_expression(" * ".join([longest] * 5))
    with pytest.raises(ExpressionError, match="intermediate"):
        evaluate(node)
    check = check_game24(" * ".join([longest] * 4), (4, 9, 10, 13))
    assert (check.ok, check.value) == (False, None)
    assert "intermediate" in check.reason


def test_numbers_beyond_the_bounds_are_not_judged() -> None:
    # Python refuses int() of over 4,300 digits; the old parser raised on such a claim.
    assert find_arithmetic_claims("9" * 5000 + " + 1 = 2") == []
    assert parse_game24_step("9" * 5000 + " + 1 = 2") is None
    assert parse_game24_step("3/0 + 1 = 2") is None


async def test_game24_verifiers_abstain_on_numbers_no_expression_can_name() -> None:
    question = ChatMessage("user", "Use a 5,001-digit number, 4, 9 and 10 to make 24.")
    problem = Problem(messages=(question,), task="game24", numbers=(10**5000, 4, 9, 10))
    for verifier in (Game24Verifier(), build_verifier("game24_steps")):
        assert not verifier.applies_to(problem)
        verdict = await verifier.verify(problem, candidate("4 + 9 = 13 (left: 13 10)"))
        assert verdict.passed is None
