"""Step formats: what the engine is asked for, and how a proposal is read back."""

from __future__ import annotations

import re
from fractions import Fraction

from cluster.config import TaskSettings
from cluster.tasks import get_task, pose
from cluster.tasks.game24 import Game24Steps, Operation, claimed_result, legal_operations
from cluster.types import ChatMessage, Completion

PUZZLE = pose((ChatMessage("user", "4 9 10 13"),), "game24")


def steps() -> Game24Steps:
    format_ = get_task("game24").step_format(PUZZLE, TaskSettings())
    assert isinstance(format_, Game24Steps)
    return format_


def test_game24_grammar_admits_only_the_numbers_left() -> None:
    shape = steps().request([], final=False)
    assert shape.regex is not None
    assert re.fullmatch(shape.regex, "13 - 9 = 4")
    assert re.fullmatch(shape.regex, "10 / 4 = 5/2")
    assert not re.fullmatch(shape.regex, "7 - 9 = -2")  # 7 is not in the puzzle
    assert not re.fullmatch(shape.regex, "13 - 9 = 4 (left: 4 10 4)")


def test_the_last_step_claims_the_target_and_the_verifier_judges_the_claim() -> None:
    shape = steps().request(["13 - 9 = 4 (left: 4 10 4)", "10 - 4 = 6 (left: 4 6)"], final=False)
    assert shape.regex is not None
    assert re.fullmatch(shape.regex, "4 * 6 = 24") and re.fullmatch(shape.regex, "6 - 4 = 24")
    assert not re.fullmatch(shape.regex, "6 - 4 = 2")


def test_a_step_costs_at_most_its_longest_sentence_in_tokens() -> None:
    pool = ["13 - 9 = 4 (left: 4 10 4)"]
    shape = steps().request(pool, final=False)
    longest = "10 / 4 = -1234/5678"
    assert shape.regex is not None and re.fullmatch(shape.regex, longest)
    # Each token is at least one character; one more for the end of the sequence.
    assert shape.max_tokens == len(longest) + 1


def test_reading_a_step_adds_the_numbers_left_and_ends_at_one_number() -> None:
    format_ = steps()
    first = format_.read([], Completion("13 - 9 = 4", 5, "stop"), final=False)
    assert (first.text, first.terminal, first.answer) == ("13 - 9 = 4 (left: 4 10 4)", False, None)
    path = [first.text, "10 - 4 = 6 (left: 4 6)"]
    last = format_.read(path, Completion("4 * 6 = 24", 5, "stop"), final=False)
    assert last.terminal and last.answer == "(13 - 9) * (10 - 4)"


def test_steps_proposed_here_before_are_not_offered_again() -> None:
    format_ = steps()
    path = ["13 - 9 = 4 (left: 4 10 4)", "10 - 4 = 6 (left: 4 6)"]
    tried = ["4 * 6 = 24 (left: 24)", "6 - 4 = 24 (left: 24)"]
    shape = format_.request(path, final=False, tried=tried)
    assert shape is not None and shape.regex is not None
    assert not re.fullmatch(shape.regex, "6 * 4 = 24")  # the mirror image of a step tried
    assert not re.fullmatch(shape.regex, "6 - 4 = 24")
    assert re.fullmatch(shape.regex, "4 - 6 = 24")
    everything = [f"{a} {op} {b} = 24 (left: 24)" for a, b in (("4", "6"), ("6", "4")) for op in "+-*/"]
    assert format_.request(path, final=False, tried=everything) is None
    # A free-text chain that happens to read like a step is not a step of this format.
    fresh = format_.request([], final=False, tried=["4 + 9 = 13"])
    assert fresh is not None and fresh.regex is not None and re.fullmatch(fresh.regex, "4 + 9 = 13")


def test_a_step_is_asked_for_at_the_task_step_temperature() -> None:
    greedy = (
        get_task("game24").step_format(PUZZLE, TaskSettings(step_temperature=0.0)).request([], final=False)
    )
    effort_default = get_task("game24").step_format(PUZZLE, TaskSettings()).request([], final=False)
    assert greedy is not None and greedy.temperature == 0.0
    assert effort_default is not None and effort_default.temperature is None


def test_the_grammar_offers_exactly_the_legal_operations_and_never_a_division_by_zero() -> None:
    # After 13 - 13 = 0 a zero is among the numbers left: nothing may be divided by it.
    zero = pose((ChatMessage("user", "4 9 13 13"),), "game24")
    format_ = get_task("game24").step_format(zero, TaskSettings())
    path = ["13 - 13 = 0 (left: 4 9 0)"]
    tried = ["4 + 9 = 13 (left: 0 13)"]
    shape = format_.request(path, final=False, tried=tried)
    assert shape is not None and shape.regex is not None
    pool = [Fraction(n) for n in (4, 9, 0)]
    legal = legal_operations(pool, [(Fraction(4), "+", Fraction(9))])
    assert Operation("4", "/", "0") not in legal and Operation("0", "/", "4") in legal
    # The tried step and its mirror image are left out, as the grammar leaves them out.
    assert Operation("4", "+", "9") not in legal and Operation("9", "+", "4") not in legal
    offered = {
        operation
        for operation in legal_operations(pool)
        if re.fullmatch(shape.regex, f"{' '.join(operation)} = {operation.value()}")
    }
    assert offered == set(legal)
    assert claimed_result(pool) is None and claimed_result(pool[:2]) == "24"
