"""How verdicts combine into a chain's score: the answer decides, steps refine."""

from __future__ import annotations

import pytest

from cluster.search.scoring import combined_score
from cluster.types import Verdict

pytestmark = pytest.mark.unit


def _verdict(score: float, passed: bool | None, judges_answer: bool = True) -> Verdict:
    return Verdict("v", score, passed, "", judges_answer)


def test_a_wrong_answer_with_right_steps_loses_to_a_right_answer() -> None:
    wrong_answer_right_steps = combined_score(
        [_verdict(0.0, False), _verdict(1.0, True, judges_answer=False)]
    )
    right_answer_wrong_steps = combined_score(
        [_verdict(1.0, True), _verdict(0.0, False, judges_answer=False)]
    )
    assert wrong_answer_right_steps == pytest.approx(0.1)
    assert right_answer_wrong_steps == pytest.approx(0.9)


def test_steps_decide_alone_when_no_answer_verdict() -> None:
    assert combined_score([_verdict(0.75, False, judges_answer=False)]) == 0.75


def test_abstentions_are_neutral() -> None:
    assert combined_score([_verdict(0.5, None), _verdict(0.5, None, judges_answer=False)]) == 0.5
    assert combined_score([]) == 0.5
