"""General questions: free-text steps, the answer on a final "The answer is ..." line."""

from __future__ import annotations

from cluster.tasks.base import Task, register_task


@register_task
class GeneralTask(Task):
    name = "general"
    instructions = (
        "Think through the problem step by step. Finish with one line of the form 'The answer is <answer>.'"
    )
