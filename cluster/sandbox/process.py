"""One confined child process, watched from the event loop without blocking it.

The child is started by `subprocess.Popen`, whose C code starts a new session and closes
every inherited file descriptor (a leaked socket would be a way out of the network
namespace). bubblewrap reports the program's process id on a status pipe; the
program is stopped by SIGKILL to that process, the first of its PID namespace, which takes
the whole namespace down with it. bubblewrap's monitor then reaps it, so `wait4` on the
monitor returns the CPU time of the program's whole process tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any

from cluster.sandbox.command import SandboxError, SandboxUnavailableError
from cluster.sandbox.result import StopReason

_READ_CHUNK = 64 * 1024
# A killed namespace ends at once; these only bound waits that should never be long.
_AFTER_KILL_S = 2.0
_AFTER_GROUP_KILL_S = 10.0


@dataclass(frozen=True, slots=True)
class Finished:
    exit_code: int | None
    stdout: bytes
    stderr: bytes
    cpu_seconds: float
    wall_seconds: float
    stopped: StopReason | None


@dataclass(frozen=True, slots=True)
class _Exit:
    code: int
    cpu_seconds: float


async def run_child(
    command: Callable[[int], Sequence[str]],
    *,
    pass_fds: Sequence[int],
    max_output_bytes: int,
    wall_seconds: float,
) -> Finished:
    """Run `command(status_fd)` with an empty environment; stop it at the wall time or the
    output limit.

    `status_fd` is the descriptor bubblewrap writes its JSON status lines to.
    """
    started = time.monotonic()
    status_read, status_write = os.pipe()
    try:
        popen = _start(command(status_write), (*pass_fds, status_write))
    except BaseException:
        os.close(status_read)
        raise
    finally:
        os.close(status_write)
    child = _Child(popen, os.fdopen(status_read, "rb"), max_output_bytes)
    try:
        stopped = await child.wait(wall_seconds)
        if stopped is not None:
            await child.stop()
        end, out, err = await child.outcome()
    finally:
        # Cancelled or failed: the program must not outlive the call.
        child.kill_all()
    return Finished(end.code, out, err, end.cpu_seconds, time.monotonic() - started, stopped)


class _Child:
    """bubblewrap's monitor process and what it reports: exit, output, the program's pid."""

    def __init__(self, popen: subprocess.Popen[bytes], status: IO[bytes], max_output_bytes: int) -> None:
        assert popen.stdout is not None and popen.stderr is not None  # both are pipes
        self._popen = popen
        self._exited = _watch_exit(popen)
        self._stdout = asyncio.ensure_future(_read_capped(popen.stdout, max_output_bytes))
        self._stderr = asyncio.ensure_future(_read_capped(popen.stderr, max_output_bytes))
        self._program_pidfd: int | None = None
        self._status = asyncio.ensure_future(self._read_status(status))

    async def wait(self, wall_seconds: float) -> StopReason | None:
        """None once the program ended and closed its output; else why it must be stopped."""
        pending: set[asyncio.Future[Any]] = {self._stdout, self._stderr, self._exited}
        try:
            async with asyncio.timeout(wall_seconds):
                while pending:
                    _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    if any(s.done() and s.result()[1] for s in (self._stdout, self._stderr)):
                        return StopReason.OUTPUT
        except TimeoutError:
            return StopReason.WALL_TIME
        return None

    async def stop(self) -> None:
        """Kill the program (its namespace dies with it) and let bubblewrap report on it."""
        if self._program_pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._program_pidfd, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_AFTER_KILL_S):
                    await asyncio.shield(self._exited)
                    return
        # No program yet, or bubblewrap did not end: end bubblewrap itself.
        self.kill_all()

    async def outcome(self) -> tuple[_Exit, bytes, bytes]:
        try:
            async with asyncio.timeout(_AFTER_GROUP_KILL_S):
                end = await self._exited
                (out, _), (err, _) = await self._stdout, await self._stderr
                await self._status
        except TimeoutError as error:
            raise SandboxError("the sandboxed program did not end after SIGKILL") from error
        return end, out, err

    def kill_all(self) -> None:
        """SIGKILL bubblewrap's process group; the namespace dies with it (--die-with-parent)."""
        if not self._exited.done():
            # Not reaped yet, so the id still names our child (or its zombie).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._popen.pid, signal.SIGKILL)
        for task in (self._stdout, self._stderr, self._status):
            task.cancel()
        if self._program_pidfd is not None:
            os.close(self._program_pidfd)
            self._program_pidfd = None

    async def _read_status(self, status: IO[bytes]) -> None:
        """Read bubblewrap's status lines to the end (it must never write to a closed pipe)."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), status)
        try:
            while line := await reader.readline():
                pid = _child_pid(line)
                if pid is not None and self._program_pidfd is None:
                    # A pidfd keeps naming this process even if its id is reused later.
                    with contextlib.suppress(ProcessLookupError):
                        self._program_pidfd = os.pidfd_open(pid)
        finally:
            transport.close()


def _child_pid(status_line: bytes) -> int | None:
    """The program's pid, if this line of bubblewrap's JSON status gives it."""
    try:
        status = json.loads(status_line)
    except ValueError:
        return None
    pid = status.get("child-pid") if isinstance(status, dict) else None
    return pid if isinstance(pid, int) else None


def _start(argv: Sequence[str], pass_fds: Sequence[int]) -> subprocess.Popen[bytes]:
    # Called on the event loop's thread, never a short-lived worker thread: bubblewrap's
    # --die-with-parent fires when the *thread* that started it ends.
    try:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={},
            cwd="/",
            pass_fds=tuple(pass_fds),
            close_fds=True,
            start_new_session=True,
        )
    except OSError as error:
        raise SandboxUnavailableError(f"the Python sandbox could not start: {error}") from error


def _watch_exit(popen: subprocess.Popen[bytes]) -> asyncio.Future[_Exit]:
    """A future set when the child exits, with its exit code and the CPU time of its tree."""
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[_Exit] = loop.create_future()
    pidfd = os.pidfd_open(popen.pid)

    def reap() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        try:
            _, status, usage = os.wait4(popen.pid, 0)
        except ChildProcessError:
            # Reaped by someone else: this process ignores SIGCHLD (Ray's subreaper option
            # does that). Popen must not wait for it either.
            popen.returncode = -signal.SIGKILL
            if not exited.done():
                exited.set_exception(
                    SandboxUnavailableError(
                        "the calling process reaps its children automatically (SIGCHLD ignored), so "
                        "the sandbox cannot learn how a program ended"
                    )
                )
            return
        popen.returncode = os.waitstatus_to_exitcode(status)
        if not exited.done():
            exited.set_result(_Exit(popen.returncode, usage.ru_utime + usage.ru_stime))

    loop.add_reader(pidfd, reap)
    return exited


async def _read_capped(pipe: IO[bytes], cap: int) -> tuple[bytes, bool]:
    """Up to `cap` bytes of the pipe and whether it held more."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        data = bytearray()
        while len(data) <= cap:
            chunk = await reader.read(_READ_CHUNK)
            if not chunk:
                return bytes(data), False
            data += chunk
        return bytes(data[:cap]), True
    finally:
        transport.close()
