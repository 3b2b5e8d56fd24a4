"""Task families as plug-ins: a family registered in one place is accepted everywhere."""

from __future__ import annotations

import pytest

from cluster.api import parse_chat_request
from cluster.config import TaskSettings, load_config
from cluster.tasks import TASK_VERIFIERS, base, get_task, pose, task_names, verifiers_for
from cluster.tasks.base import Task, register_task
from cluster.types import ChatMessage

pytestmark = pytest.mark.unit


class UnitsTask(Task):
    """The README's worked example."""

    name = "units"
    instructions = (
        "Convert step by step, one conversion factor per line. "
        "Finish with one line of the form 'The answer is <number> <unit>.'"
    )
    settings = TaskSettings(step_delimiter="\n")
    verifiers = ("numeric", "arithmetic")


@pytest.fixture(autouse=True)
def units(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example registered for one test only: other tests see the shipped families."""
    monkeypatch.setattr(base, "_TASKS", dict(base._TASKS))
    register_task(UnitsTask)


def test_a_registered_family_is_accepted_by_the_api_the_config_and_the_verifier_lists() -> None:
    assert "units" in task_names()
    body = b'{"model": "m", "messages": [{"role": "user", "content": "1 foot in inches?"}], "task": "units"}'
    assert parse_chat_request(body).task == "units"
    config = load_config().with_overrides({"tasks": {"units": {"step_delimiter": "\n\n"}}})
    assert config.task_settings("units").step_delimiter == "\n\n"
    assert load_config().task_settings("units") == UnitsTask.settings
    assert verifiers_for((TASK_VERIFIERS, "judge"), "units") == ("numeric", "arithmetic", "judge")


def test_the_defaults_read_stated_answers_and_grade_against_the_reference() -> None:
    task = get_task("units")
    problem = pose((ChatMessage("user", "How many inches are in a foot?"),), "units", reference="12")
    chain = "1 foot = 12 inches\nThe answer is 12 inches."
    answer = task.extract_answer(chain)
    assert answer is not None and task.is_correct(answer, problem)
    assert task.vote_key("12 inches") == task.vote_key("12 in")
    assert not task.is_correct("13 inches", problem)


def test_unknown_families_are_refused_with_the_known_ones_listed() -> None:
    with pytest.raises(ValueError, match=r"task must be one of .*'game24'"):
        get_task("chess")
    with pytest.raises(ValueError, match="unknown task family 'chess'"):
        load_config().with_overrides({"tasks": {"chess": {"step_delimiter": "\n"}}})
