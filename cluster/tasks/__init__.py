"""Task families as plug-ins: how a problem of each family is posed, stepped, answered, graded.

A new family is one module with a `@register_task` class, listed here (README, "Adding a task
family").
"""

from cluster.tasks import code, game24, general, math
from cluster.tasks.base import (
    TASK_VERIFIERS,
    InvalidProblem,
    Task,
    UnknownTaskError,
    get_task,
    pose,
    register_task,
    task_names,
    verifiers_for,
)

__all__ = [
    "TASK_VERIFIERS",
    "InvalidProblem",
    "Task",
    "UnknownTaskError",
    "code",
    "game24",
    "general",
    "get_task",
    "math",
    "pose",
    "register_task",
    "task_names",
    "verifiers_for",
]
