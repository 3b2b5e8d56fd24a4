"""Prompts: a problem rendered with the model's own chat template, and the judge's question.

Each task family's instructions (`cluster.tasks`) only say how to lay out the work and the
answer; they never contain hints towards a solution (the search is the model's).
"""

from __future__ import annotations

from typing import Protocol

from cluster.tasks import get_task
from cluster.types import Problem

JUDGE_QUESTION = "Check the answer above carefully. Is it correct? Reply with Yes or No."


class ChatTokenizer(Protocol):
    def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs: object) -> object: ...

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


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
        conversation = [{"role": "system", "content": get_task(problem.task).instructions}]
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
