"""Code (HumanEval style): the request is a Python function's signature and docstring; the
answer is the whole function, in a fenced Python block. Verified by running the examples the
request shows (`code_tests`, in the sandbox), never hidden tests."""

from __future__ import annotations

import ast

from cluster.config import TaskSettings
from cluster.tasks.base import Task, register_task
from cluster.verifiers.code_blocks import last_python_block

# Whitespace-normalised source is the vote key of code that does not parse.
_UNPARSED = "unparsed:"


@register_task
class CodeTask(Task):
    name = "code"
    instructions = (
        "Complete the Python function the user gives. Think it through briefly, then finish with "
        "the complete function, its signature and any imports it needs, in one ```python block."
    )
    settings = TaskSettings(step_delimiter="\n\n")
    verifiers = ("code_tests",)

    def extract_answer(self, text: str) -> str | None:
        return last_python_block(text)

    def vote_key(self, answer: str) -> str:
        """Programs agree when their syntax trees do (comments, spacing and quotes aside)."""
        try:
            return ast.dump(ast.parse(answer))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return _UNPARSED + " ".join(answer.split())
