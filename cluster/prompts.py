"""Prompts: how a problem of each task family is put to the model.

Instructions only say how to lay out the work and the answer; they never contain hints
towards a solution (DESIGN.md: the search is the model's).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from cluster.types import ChatMessage, Problem, TaskFamily

TASK_INSTRUCTIONS: dict[TaskFamily, str] = {
    TaskFamily.GENERAL: (
        "Think through the problem step by step. Finish with one line of the form 'The answer is <answer>.'"
    ),
    TaskFamily.MATH: (
        "Solve the problem step by step. Write every calculation as an equation, "
        "for example 3 * 15 = 45. Finish with one line of the form 'The answer is <number>.'"
    ),
    TaskFamily.GAME24: (
        "Use each of the four given numbers exactly once, with + - * / and parentheses, "
        "to make 24. Work one step per line: combine two of the numbers left into one, "
        "written as 'a op b = c (left: the numbers left)', until one number is left. "
        "Then finish with one line of the form 'Answer: <expression> = 24'. "
        "The layout, shown for the numbers 2 3 4 8:\n"
        "2 * 3 = 6 (left: 4 6 8)\n8 - 4 = 4 (left: 4 6)\n6 * 4 = 24 (left: 24)\n"
        "Answer: (2 * 3) * (8 - 4) = 24"
    ),
}

JUDGE_QUESTION = "Check the answer above carefully. Is it correct? Reply with Yes or No."

# At most 6 digits a number: longer ones make no puzzle, and past 4,300 digits int() refuses them.
_GAME24_NUMBERS = re.compile(r"^\s*(\d{1,6})\s+(\d{1,6})\s+(\d{1,6})\s+(\d{1,6})\s*$")


class ChatTokenizer(Protocol):
    def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs: object) -> object: ...

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


class InvalidProblem(ValueError):
    """The request cannot be posed as a problem of its task family."""


def build_problem(messages: Sequence[ChatMessage], task: TaskFamily, reference: str | None = None) -> Problem:
    problem = Problem(messages=tuple(messages), task=task, reference=reference)
    if task is not TaskFamily.GAME24:
        return problem
    match = _GAME24_NUMBERS.match(problem.question)
    if match is None:
        raise InvalidProblem(
            "task game24 expects the last user message to be four whole numbers (up to 6 digits) "
            f"separated by spaces, like '4 9 10 13'; got {problem.question[:60]!r}"
        )
    return Problem(problem.messages, task, tuple(int(n) for n in match.groups()), reference)


class PromptBuilder:
    """Renders problems with the model's own chat template and counts their tokens."""

    def __init__(self, tokenizer: ChatTokenizer) -> None:
        self._tokenizer = tokenizer

    def render(self, problem: Problem) -> str:
        return self._render(self._conversation(problem))

    def render_judge(self, problem: Problem, chain: str) -> str:
        """The chain as the assistant's turn, then the judge question as the next user turn.

        Rendered with the same template as `render`, so its prefix is the solve prompt plus
        the chain, which the engine's prefix cache already holds.
        """
        conversation = self._conversation(problem)
        conversation += [
            {"role": "assistant", "content": chain},
            {"role": "user", "content": JUDGE_QUESTION},
        ]
        return self._render(conversation)

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    @staticmethod
    def _conversation(problem: Problem) -> list[dict[str, str]]:
        conversation = [{"role": "system", "content": TASK_INSTRUCTIONS[problem.task]}]
        # A caller's own system message replaces none of ours: it follows, so both apply.
        conversation += [{"role": m.role, "content": m.content} for m in problem.messages]
        return conversation

    def _render(self, conversation: list[dict[str, str]]) -> str:
        rendered = self._tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=True
        )
        if not isinstance(rendered, str):
            raise TypeError(f"chat template rendered {type(rendered).__name__}, expected text")
        return rendered
