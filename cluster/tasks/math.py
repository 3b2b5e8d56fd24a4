"""Math word problems (GSM8K style): one calculation per line, a numeric final answer."""

from __future__ import annotations

from cluster.config import TaskSettings
from cluster.tasks.base import Task, register_task


@register_task
class MathTask(Task):
    name = "math"
    instructions = (
        "Solve the problem step by step. Write every calculation as an equation, "
        "for example 3 * 15 = 45. Finish with one line of the form 'The answer is <number>.'"
    )
    settings = TaskSettings(step_delimiter="\n")
    # A chain's own Python program (program of thought), run in the sandbox, checks its arithmetic.
    verifiers = ("numeric", "arithmetic", "python_program")
