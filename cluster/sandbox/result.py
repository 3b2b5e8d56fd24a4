"""What a sandboxed run came to: a status for every way a program can end, and why."""

from __future__ import annotations

import enum
import errno
import re
import signal
from dataclasses import dataclass

from cluster.sandbox.settings import SandboxSettings

# bubblewrap reports a program killed by signal N as exit code 128 + N.
_SIGNAL_EXIT_BASE = 128
# The last line of a Python traceback: "ValueError: ..." or "module.Error: ...".
_EXCEPTION_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::\s?(?P<message>.*))?$")
_ERRNO = re.compile(r"\[Errno (?P<number>\d+)\]")
# Errors the sandbox itself causes: denied files, the read-only root, the missing network,
# the process limit, the full working directory.
_DENIED_ERRNOS = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EHOSTUNREACH,
        errno.ECONNREFUSED,
        errno.EAGAIN,
        errno.ENOSPC,
        errno.EFBIG,
    }
)
# Traceback frames name files by their path inside the sandbox; the name alone says enough.
_FRAME_PATH = re.compile(r'File "(?:[^"\n]*/)?(?P<name>[^"/\n]+)"')


class SandboxStatus(enum.StrEnum):
    OK = "ok"
    # The program raised or exited with a non-zero code.
    ERROR = "error"
    # It used its CPU time or ran past the wall-clock limit.
    TIMEOUT = "timeout"
    # An allocation went past the memory limit.
    MEMORY = "memory"
    # It printed more than the output limit.
    OUTPUT_LIMIT = "output_limit"
    # It died on something the sandbox denies: files outside it, the network, more processes.
    FORBIDDEN = "forbidden"


class StopReason(enum.Enum):
    """Why the sandbox stopped a program before it ended by itself."""

    WALL_TIME = "wall_time"
    OUTPUT = "output"


@dataclass(frozen=True, slots=True)
class SandboxResult:
    status: SandboxStatus
    # What the program printed, each cut at the output limit; stderr without sandbox paths.
    stdout: str
    stderr: str
    # None when the sandbox stopped the program itself (wall time, output).
    exit_code: int | None
    # CPU time of all the program's processes together, as the kernel counted it.
    cpu_seconds: float
    wall_seconds: float
    # One line a person can act on: the exception, or which limit stopped the program.
    reason: str

    @property
    def ok(self) -> bool:
        return self.status is SandboxStatus.OK


def classify(
    exit_code: int | None,
    cpu_seconds: float,
    stderr: str,
    stopped: StopReason | None,
    settings: SandboxSettings,
) -> tuple[SandboxStatus, str]:
    """The status of a finished run and its reason.

    The exception a program died with is read from its own stderr, which the program
    controls: a program can mislabel its own failure, never turn it into success.
    """
    if stopped is StopReason.WALL_TIME:
        return SandboxStatus.TIMEOUT, f"ran past the wall-clock limit of {settings.wall_seconds:g} s"
    if stopped is StopReason.OUTPUT:
        return SandboxStatus.OUTPUT_LIMIT, f"printed more than {settings.max_output_bytes} bytes"
    if exit_code == 0:
        return SandboxStatus.OK, "exited normally"
    if _out_of_cpu(exit_code, cpu_seconds, settings):
        return SandboxStatus.TIMEOUT, f"used its CPU-time limit of {settings.cpu_seconds} s"
    exception = last_exception_line(stderr)
    if exception is not None:
        if exception.split(":", 1)[0].endswith("MemoryError"):
            return SandboxStatus.MEMORY, f"ran out of its {settings.memory_mib} MiB of memory ({exception})"
        if _denied(exception):
            return SandboxStatus.FORBIDDEN, f"the sandbox denied it: {exception}"
        return SandboxStatus.ERROR, exception
    return SandboxStatus.ERROR, _exit_description(exit_code)


def last_exception_line(stderr: str) -> str | None:
    """The "Type: message" line that ends a Python traceback, if stderr ends with one."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    if not lines or _EXCEPTION_LINE.match(lines[-1]) is None:
        return None
    traceback_start = any(line.startswith("Traceback (most recent call last)") for line in lines)
    return lines[-1].strip() if traceback_start else None


def clean_stderr(stderr: str) -> str:
    """stderr with traceback frames naming files only, not where they lie."""
    return _FRAME_PATH.sub(lambda match: f'File "{match.group("name")}"', stderr)


def _out_of_cpu(exit_code: int | None, cpu_seconds: float, settings: SandboxSettings) -> bool:
    if exit_code == _SIGNAL_EXIT_BASE + signal.SIGXCPU:
        return True
    killed = exit_code == _SIGNAL_EXIT_BASE + signal.SIGKILL
    return killed and cpu_seconds >= settings.cpu_seconds


def _denied(exception: str) -> bool:
    found = _ERRNO.search(exception)
    return found is not None and int(found.group("number")) in _DENIED_ERRNOS


def _exit_description(exit_code: int | None) -> str:
    number = (exit_code or 0) - _SIGNAL_EXIT_BASE
    if number in {int(known) for known in signal.Signals}:
        return f"killed by {signal.Signals(number).name}"
    return f"exited with code {exit_code}"
