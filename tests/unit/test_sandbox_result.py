"""How the sandbox names the end of a run (no processes: the integration tests run real ones)."""

from __future__ import annotations

import signal

import pytest

from cluster.sandbox import SandboxSettings, SandboxStatus, last_exception_line
from cluster.sandbox.result import StopReason, classify, clean_stderr

pytestmark = pytest.mark.unit

SETTINGS = SandboxSettings(cpu_seconds=5, memory_mib=256, wall_seconds=10, max_output_bytes=100)


def traceback(last_line: str) -> str:
    return f'Traceback (most recent call last):\n  File "main.py", line 1, in <module>\n{last_line}\n'


@pytest.mark.parametrize(
    ("exit_code", "cpu_seconds", "stderr", "stopped", "status", "reason"),
    [
        (0, 0.1, "", None, SandboxStatus.OK, "exited normally"),
        (None, 0.1, "", StopReason.WALL_TIME, SandboxStatus.TIMEOUT, "wall-clock limit of 10 s"),
        (None, 0.1, "", StopReason.OUTPUT, SandboxStatus.OUTPUT_LIMIT, "more than 100 bytes"),
        (128 + signal.SIGXCPU, 5.0, "", None, SandboxStatus.TIMEOUT, "CPU-time limit of 5 s"),
        # The hard limit's SIGKILL, for a program that caught SIGXCPU.
        (128 + signal.SIGKILL, 6.0, "", None, SandboxStatus.TIMEOUT, "CPU-time limit of 5 s"),
        (128 + signal.SIGKILL, 0.2, "", None, SandboxStatus.ERROR, "killed by SIGKILL"),
        (128 + signal.SIGSEGV, 0.2, "", None, SandboxStatus.ERROR, "killed by SIGSEGV"),
        (3, 0.2, "", None, SandboxStatus.ERROR, "exited with code 3"),
        (1, 0.2, traceback("MemoryError"), None, SandboxStatus.MEMORY, "256 MiB"),
        (1, 0.2, traceback("ValueError: bad"), None, SandboxStatus.ERROR, "ValueError: bad"),
        (
            1,
            0.2,
            traceback("PermissionError: [Errno 13] Permission denied: '/x'"),
            None,
            SandboxStatus.FORBIDDEN,
            "the sandbox denied it: PermissionError",
        ),
        (
            1,
            0.2,
            traceback("ConnectionRefusedError: [Errno 111] Connection refused"),
            None,
            SandboxStatus.FORBIDDEN,
            "Connection refused",
        ),
        # Not found is the program's own mistake as much as the sandbox's doing.
        (
            1,
            0.2,
            traceback("FileNotFoundError: [Errno 2] No such file or directory: 'a'"),
            None,
            SandboxStatus.ERROR,
            "FileNotFoundError",
        ),
    ],
)
def test_each_end_has_a_status_and_a_reason(
    exit_code: int | None,
    cpu_seconds: float,
    stderr: str,
    stopped: StopReason | None,
    status: SandboxStatus,
    reason: str,
) -> None:
    got_status, got_reason = classify(exit_code, cpu_seconds, stderr, stopped, SETTINGS)
    assert got_status is status
    assert reason in got_reason


def test_the_exception_line_is_read_only_after_a_traceback() -> None:
    assert last_exception_line(traceback("KeyError: 'a'") + "\n\n") == "KeyError: 'a'"
    # A program that merely prints something shaped like an exception did not raise it.
    assert last_exception_line("Note: nothing went wrong\n") is None
    assert last_exception_line("") is None


def test_traceback_frames_keep_file_names_and_lose_directories() -> None:
    stderr = (
        "Traceback (most recent call last):\n"
        '  File "/sandbox/main.py", line 2, in <module>\n'
        '  File "/usr/lib/python3.11/fractions.py", line 9, in __new__\n'
        "ZeroDivisionError: Fraction(1, 0)\n"
    )
    cleaned = clean_stderr(stderr)
    assert 'File "main.py", line 2' in cleaned
    assert 'File "fractions.py", line 9' in cleaned
    assert "/sandbox" not in cleaned and "/usr/lib" not in cleaned
