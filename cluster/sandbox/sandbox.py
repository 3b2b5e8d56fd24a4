"""The Python sandbox: runs model-written programs confined, one typed result for each."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

from cluster.sandbox.command import SandboxUnavailableError, Tools, sandbox_command
from cluster.sandbox.process import Finished, run_child
from cluster.sandbox.result import SandboxResult, classify, clean_stderr
from cluster.sandbox.settings import SandboxSettings

# Size of the range per-run user ids are drawn from (SandboxSettings.uid_base onwards).
UID_RANGE = 1_000_000
# Run once before the first program: the confinement must hold here, or nothing runs.
_PROBE = (
    "import os, socket\n"
    "interfaces = [name for _, name in socket.if_nameindex()]\n"
    "print(os.getuid() != 0 and interfaces == ['lo'] and not os.path.exists('/etc'))\n"
)
_PROBE_PASSED = "True"


class Sandbox:
    """Runs Python programs under `SandboxSettings`; safe to share within one event loop.

    A program's failures are results (`SandboxResult.status`); `SandboxUnavailableError` means
    the confinement itself cannot be had here, and then no program runs at all.
    """

    def __init__(self, settings: SandboxSettings | None = None) -> None:
        self.settings = settings or SandboxSettings()
        self._slots = asyncio.Semaphore(self.settings.max_concurrent)
        self._check_lock = asyncio.Lock()
        self._tools: Tools | None = None
        self._uids_in_use: set[int] = set()

    async def run(self, program: str) -> SandboxResult:
        """Run `program` (Python source) in a fresh sandbox and say how it ended."""
        tools = await self._checked_tools()
        async with self._slots:
            return await self._run(tools, program)

    async def check(self) -> None:
        """Make sure programs run confined here; raise SandboxUnavailableError if not.

        `run` checks before its first program; a deployment may call this at start to fail
        early rather than at its first verification.
        """
        await self._checked_tools()

    async def _checked_tools(self) -> Tools:
        async with self._check_lock:
            if self._tools is None:
                self._tools = await self._probe()
            return self._tools

    async def _probe(self) -> Tools:
        tools = Tools.find()
        if not os.access(self.settings.python, os.X_OK):
            raise SandboxUnavailableError(f"sandbox.python {self.settings.python} is not an executable here")
        async with self._slots:
            result = await self._run(tools, _PROBE)
        if result.stdout.strip() != _PROBE_PASSED:
            detail = result.stderr.strip() or result.stdout.strip() or result.reason
            raise SandboxUnavailableError(f"the sandbox's confinement does not hold here: {detail}")
        return tools

    async def _run(self, tools: Tools, program: str) -> SandboxResult:
        with self._uid() as uid, _program_file(program) as program_fd:
            finished = await run_child(
                lambda status_fd: sandbox_command(tools, self.settings, uid, program_fd, status_fd),
                pass_fds=(program_fd,),
                max_output_bytes=self.settings.max_output_bytes,
                wall_seconds=self.settings.wall_seconds,
            )
        return self._result(finished)

    def _result(self, finished: Finished) -> SandboxResult:
        stderr = clean_stderr(finished.stderr.decode("utf-8", "replace"))
        status, reason = classify(
            finished.exit_code, finished.cpu_seconds, stderr, finished.stopped, self.settings
        )
        return SandboxResult(
            status=status,
            stdout=finished.stdout.decode("utf-8", "replace"),
            stderr=stderr,
            exit_code=None if finished.stopped else finished.exit_code,
            cpu_seconds=finished.cpu_seconds,
            wall_seconds=finished.wall_seconds,
            reason=reason,
        )

    @contextmanager
    def _uid(self) -> Iterator[int]:
        """A user id no other run of this sandbox holds.

        The process limit counts per user id, so runs sharing one would share the limit.
        Other processes on the host draw from the same range at random: a clash is
        unlikely and costs only a spurious process-limit failure.
        """
        base = self.settings.uid_base
        uid = base + random.randrange(UID_RANGE)
        while uid in self._uids_in_use:
            uid = base + random.randrange(UID_RANGE)
        self._uids_in_use.add(uid)
        try:
            yield uid
        finally:
            self._uids_in_use.discard(uid)


@contextmanager
def _program_file(program: str) -> Iterator[int]:
    """A memory-backed file holding `program`, for bubblewrap to copy into the sandbox."""
    fd = os.memfd_create("program.py")
    try:
        with open(fd, "wb", closefd=False) as file:
            file.write(program.encode("utf-8"))
        os.lseek(fd, 0, os.SEEK_SET)
        yield fd
    finally:
        os.close(fd)
