"""The command line that confines one program: util-linux's `setpriv` and `prlimit` around
bubblewrap.

setpriv drops root for the run's own user id, prlimit sets the resource limits (kernel
rlimits), coreutils' `env` resets signal handling, and bubblewrap puts the program in new
namespaces: no network (its own loopback only), its own process tree, an empty root with
/usr read-only, and a small in-memory working directory. All are well-kept Debian tools;
nothing here re-implements what they do. Switching the user here rather than in
`subprocess.Popen(user=...)` lets Popen use vfork: a fork of a large caller would block its
event loop for as long as copying its page tables takes.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from cluster.sandbox.settings import SandboxSettings

# Where the program and its writable files live inside the sandbox.
WORKDIR = "/sandbox"
PROGRAM_NAME = "main.py"
# bubblewrap's monitor process counts against the process limit too.
BWRAP_PROCESSES = 1
# Directories of the host shown (read-only) inside; merged-/usr systems make the others
# symlinks into /usr, which are recreated rather than bound.
_SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_MIB = 1024 * 1024
# Open files per process: enough for the interpreter and a program's own files.
_MAX_OPEN_FILES = 64


class SandboxError(RuntimeError):
    """The sandbox failed to run a program (not the program failing: that is a result)."""


class SandboxUnavailableError(SandboxError):
    """The sandbox cannot confine programs here, so it refuses to run them."""


@dataclass(frozen=True, slots=True)
class Tools:
    """Absolute paths of the programs the sandbox is built from."""

    setpriv: str
    prlimit: str
    env: str
    bwrap: str

    @classmethod
    def find(cls) -> Tools:
        paths = {name: shutil.which(name) for name in ("setpriv", "prlimit", "env", "bwrap")}
        missing = sorted(name for name, path in paths.items() if path is None)
        if missing:
            raise SandboxUnavailableError(
                f"the Python sandbox needs {' and '.join(missing)} (Debian packages util-linux, coreutils "
                "and bubblewrap; scripts/setup.sh installs them): refusing to run programs unconfined"
            )
        return cls(**{name: str(path) for name, path in paths.items()})


def sandbox_command(
    tools: Tools, settings: SandboxSettings, uid: int, program_fd: int, status_fd: int
) -> list[str]:
    """argv that runs the program read from `program_fd` as `uid` under every limit of
    `settings`; bubblewrap writes its JSON status (the program's pid, its exit code) to
    `status_fd`."""
    return [
        tools.setpriv,
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--",
        *_limits(tools, settings),
        # Signals the caller ignores stay ignored across exec; bubblewrap must see its
        # children exit (SIGCHLD) and the program must die of SIGXCPU and SIGPIPE.
        tools.env,
        "--default-signal",
        *_bubblewrap(tools, settings, program_fd, status_fd),
    ]


def _limits(tools: Tools, settings: SandboxSettings) -> list[str]:
    memory = settings.memory_mib * _MIB
    workdir = settings.workdir_mib * _MIB
    # CPU: the soft limit raises SIGXCPU; the hard one, a second later, kills what survives it
    # (a program that catches it, and the namespace's init, which the kernel shields from it).
    # The second is also the margin by which the kernel's CPU count may fall short of the limit
    # when the hard one strikes, so a stop there is still recognised as the CPU limit.
    return [
        tools.prlimit,
        f"--cpu={settings.cpu_seconds}:{settings.cpu_seconds + 1}",
        f"--as={memory}",
        f"--nproc={settings.max_processes + BWRAP_PROCESSES}",
        f"--fsize={workdir}",
        f"--nofile={_MAX_OPEN_FILES}",
        "--core=0",
        "--",
    ]


def _bubblewrap(tools: Tools, settings: SandboxSettings, program_fd: int, status_fd: int) -> list[str]:
    return [
        tools.bwrap,
        "--json-status-fd",
        str(status_fd),
        # New user, IPC, PID, network, UTS and cgroup namespaces; no nested user namespaces.
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        # The program is the namespace's first process: bubblewrap's monitor reaps it, and
        # with it the CPU time of everything in the namespace (no init of bubblewrap's
        # own in between, which would exit unreaped).
        "--as-pid-1",
        # A new session: the program cannot push input into a terminal of ours (TIOCSTI).
        "--new-session",
        "--ro-bind",
        "/usr",
        "/usr",
        *_system_dirs(),
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--remount-ro",
        "/dev",
        "--size",
        str(settings.workdir_mib * _MIB),
        "--tmpfs",
        WORKDIR,
        "--file",
        str(program_fd),
        f"{WORKDIR}/{PROGRAM_NAME}",
        "--chdir",
        WORKDIR,
        # The root bubblewrap builds is a memory file system without a size: make it read-only.
        "--remount-ro",
        "/",
        "--clearenv",
        *_environment(),
        "--",
        settings.python,
        # Isolated mode (no PYTHON* variables, no user site) and no bytecode files.
        "-I",
        "-B",
        PROGRAM_NAME,
    ]


def _system_dirs() -> list[str]:
    args: list[str] = []
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def _environment() -> list[str]:
    variables = {"PATH": "/usr/bin:/bin", "HOME": WORKDIR, "TMPDIR": WORKDIR, "LANG": "C.UTF-8"}
    args: list[str] = []
    for name, value in variables.items():
        args += ["--setenv", name, value]
    return args
