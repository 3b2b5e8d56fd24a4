"""Limits of the Python sandbox (`ClusterConfig.sandbox`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator


class SandboxSettings(BaseModel):
    """What one sandboxed program may use; docs/security.md says what each limit protects."""

    # Unknown keys are typos in an operator's YAML: refuse them, as every other config section does.
    model_config = ConfigDict(extra="forbid", frozen=True)

    # The interpreter that runs programs: the system's, so neither the project's virtual
    # environment nor its code is visible inside. It must live under /usr (the only tree
    # the sandbox shows).
    python: str = "/usr/bin/python3"
    # CPU time of each process: SIGXCPU at the limit, SIGKILL a second later (the program's
    # first process, its namespace's init, ignores SIGXCPU and runs to the SIGKILL).
    cpu_seconds: Annotated[int, Field(gt=0, le=600)] = 5
    # Wall-clock time of the whole run (a program that sleeps uses no CPU).
    wall_seconds: Annotated[float, Field(gt=0, le=600)] = 10.0
    # Address space of each process: a larger allocation fails with MemoryError.
    memory_mib: Annotated[int, Field(ge=64, le=65536)] = 256
    # Processes and threads of the program together (fork bombs stop here).
    max_processes: Annotated[int, Field(gt=0, le=256)] = 8
    # Bytes read from stdout and from stderr each; a program that prints more is stopped.
    max_output_bytes: Annotated[int, Field(gt=0, le=16 * 1024 * 1024)] = 64 * 1024
    # Size of the program's fresh working directory (an in-memory file system).
    workdir_mib: Annotated[int, Field(gt=0, le=1024)] = 16
    # Programs that run at once in one process; more wait their turn.
    max_concurrent: Annotated[int, Field(gt=0, le=64)] = 2
    # Each run gets its own unprivileged user id drawn from [uid_base, uid_base + 1,000,000),
    # so that the process limit counts that run's processes only.
    uid_base: Annotated[int, Field(ge=1000, le=4_000_000_000)] = 1_000_000_000

    @field_validator("python")
    @classmethod
    def _python_is_inside_the_sandbox(cls, python: str) -> str:
        if not python.startswith("/usr/"):
            raise ValueError(
                f"sandbox.python must be an absolute path under /usr/ (the only tree the sandbox shows), "
                f"not {python!r}"
            )
        return python
