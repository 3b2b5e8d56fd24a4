"""The task-family plug-in: how problems of one family are posed, cut into steps, answered and
graded, and which verifiers understand them.

A family is one module with a `Task` subclass decorated with `@register_task`, listed in
`cluster/tasks/__init__.py` (README, "Adding a task family"). Requests name it in their
`task` field; the config's `tasks.<name>` settings override its step defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, TypeVar

from cluster.answers import answers_equivalent, extract_answer, normalize_answer
from cluster.config import TaskSettings
from cluster.tasks.steps import DelimitedSteps, StepFormat
from cluster.types import ChatMessage, Problem


class InvalidProblem(ValueError):
    """The request cannot be posed as a problem of its task family."""


class UnknownTaskError(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"task must be one of {', '.join(repr(n) for n in task_names())}; got {name!r}")


class Task:
    name: ClassVar[str]
    # The system instructions: how to lay out the work and the answer; never a hint towards a
    # solution (the search is the model's).
    instructions: ClassVar[str]
    # Step settings unless the config's `tasks.<name>` says otherwise.
    settings: ClassVar[TaskSettings] = TaskSettings()
    # The verifiers that understand this family, programs first; an effort's `task` entry
    # stands for them.
    verifiers: ClassVar[tuple[str, ...]] = ("numeric", "arithmetic")
    # Whether the step grammar leaves out the steps proposed before at a node, so that greedy
    # proposals (step_temperature 0) differ from each other.
    excludes_tried_steps: ClassVar[bool] = False

    def pose(self, messages: Sequence[ChatMessage], reference: str | None = None) -> Problem:
        """The problem as the search and verifiers see it; InvalidProblem if it is not one."""
        return Problem(tuple(messages), self.name, reference=reference)

    def step_format(self, problem: Problem, settings: TaskSettings) -> StepFormat:
        return DelimitedSteps(
            problem, settings.step_delimiter, self.extract_answer, settings.step_temperature
        )

    def extract_answer(self, text: str) -> str | None:
        """The final answer a chain states, in this family's format."""
        return extract_answer(text)

    def vote_key(self, answer: str) -> str:
        """What answers agree on when chains vote: equal keys, equal answers."""
        return normalize_answer(answer)

    def labelled(self, problem: Problem) -> bool:
        """Whether `problem` carries what grading needs (a reference answer)."""
        return problem.reference is not None

    def is_correct(self, answer: str, problem: Problem) -> bool:
        """Grading against the problem's reference (evaluation only)."""
        return problem.reference is not None and answers_equivalent(answer, problem.reference)

    def grade(self, answer: str, problem: Problem) -> bool | None:
        """Whether `answer` is right by the problem's own label; None when it carries none (a
        Game of 24 puzzle labels itself, other families need a reference answer)."""
        return self.is_correct(answer, problem) if self.labelled(problem) else None


_TASKS: dict[str, Task] = {}
T = TypeVar("T", bound=type[Task])


def register_task(cls: T) -> T:
    _TASKS[cls.name] = cls()
    return cls


def get_task(name: str) -> Task:
    try:
        return _TASKS[name]
    except KeyError:
        raise UnknownTaskError(name) from None


def task_names() -> list[str]:
    return sorted(_TASKS)


def pose(messages: Sequence[ChatMessage], task: str, reference: str | None = None) -> Problem:
    return get_task(task).pose(messages, reference)


# In an effort's verifier list, the verifiers of the request's own task family.
TASK_VERIFIERS = "task"


def verifiers_for(names: Sequence[str], task: str) -> tuple[str, ...]:
    """An effort's verifiers for one task family, in order, each once."""
    expanded = [
        v for name in names for v in (get_task(task).verifiers if name == TASK_VERIFIERS else (name,))
    ]
    return tuple(dict.fromkeys(expanded))
