"""The Python sandbox against real hostile programs: each is stopped and reported, nothing
outside the sandbox is touched, and the calling process goes on running programs."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.sandbox import (
    Sandbox,
    SandboxSettings,
    SandboxStatus,
    SandboxUnavailableError,
)
from cluster.sandbox.sandbox import UID_RANGE

pytestmark = pytest.mark.integration

# Short CPU and output limits keep hostile programs quick to stop; a wall-clock limit that
# no normal program comes near on a loaded machine. Time tests set their own.
LIMITS = SandboxSettings(cpu_seconds=2, wall_seconds=60, max_output_bytes=4096)
# The kernel tears a killed namespace down asynchronously; give it a moment.
TEARDOWN_S = 10.0


def sandbox(**overrides: object) -> Sandbox:
    return Sandbox(LIMITS.model_copy(update=overrides))


def sandbox_processes(settings: SandboxSettings) -> list[int]:
    """Processes on this host running under one of the sandbox's user ids."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended while we looked
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        if settings.uid_base <= uid < settings.uid_base + UID_RANGE:
            found.append(int(entry.name))
    return found


async def assert_no_sandbox_processes_left(settings: SandboxSettings) -> None:
    deadline = time.monotonic() + TEARDOWN_S
    while (left := sandbox_processes(settings)) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert left == [], f"sandboxed processes outlived their run: {left}"


async def assert_still_serving(box: Sandbox) -> None:
    """The sandbox (and this process) run a normal program right after a hostile one."""
    result = await box.run("print(sum(range(10)))")
    assert (result.status, result.stdout) == (SandboxStatus.OK, "45\n")


# --- the happy path ----------------------------------------------------------------------------


async def test_a_program_runs_and_its_output_comes_back() -> None:
    result = await sandbox().run("import math\nprint('hello', math.factorial(5))\nprint(2 ** 10)")
    assert result.status is SandboxStatus.OK
    assert result.ok
    assert result.stdout == "hello 120\n1024\n"
    assert result.exit_code == 0
    assert result.stderr == ""
    # The interpreter's own start costs CPU time, counted by the kernel.
    assert result.cpu_seconds > 0


async def test_an_exception_is_an_error_with_its_message_and_no_sandbox_paths() -> None:
    result = await sandbox().run("def f(x):\n    return 1 / x\n\nf(0)\n")
    assert result.status is SandboxStatus.ERROR
    assert result.reason == "ZeroDivisionError: division by zero"
    assert result.exit_code == 1
    assert 'File "main.py", line 4' in result.stderr
    assert "/sandbox" not in result.stderr


async def test_a_nonzero_exit_is_an_error() -> None:
    result = await sandbox().run("import sys\nprint('partial')\nsys.exit(3)")
    assert (result.status, result.exit_code, result.stdout) == (SandboxStatus.ERROR, 3, "partial\n")
    assert result.reason == "exited with code 3"


async def test_the_program_can_write_in_its_own_working_directory() -> None:
    program = (
        "import os, tempfile\n"
        "open('notes.txt', 'w').write('kept')\n"
        "with tempfile.NamedTemporaryFile('w', delete=False) as f:\n"
        "    f.write('temp')\n"
        "print(open('notes.txt').read(), os.path.dirname(f.name) == os.getcwd())\n"
    )
    result = await sandbox().run(program)
    assert (result.status, result.stdout) == (SandboxStatus.OK, "kept True\n")


async def test_each_run_starts_from_a_fresh_directory() -> None:
    box = sandbox()
    first = await box.run("open('left_behind.txt', 'w').write('x')")
    second = await box.run("import os\nprint(os.listdir('.'))")
    assert first.ok
    assert (second.status, second.stdout) == (SandboxStatus.OK, "['main.py']\n")


async def test_runs_at_once_all_finish_with_their_own_output() -> None:
    box = sandbox(max_concurrent=2)
    results = await asyncio.gather(*(box.run(f"print({n} * {n})") for n in range(5)))
    assert [r.stdout for r in results] == [f"{n * n}\n" for n in range(5)]


# --- time ----------------------------------------------------------------------------------------


async def test_an_infinite_loop_is_stopped_by_its_cpu_limit() -> None:
    # The wall-clock limit is far away, so only the CPU limit can stop this loop.
    box = sandbox(cpu_seconds=1, wall_seconds=300)
    result = await box.run("while True:\n    pass\n")
    assert result.status is SandboxStatus.TIMEOUT
    assert "CPU-time limit of 1 s" in result.reason
    assert result.cpu_seconds >= 1
    await assert_still_serving(box)


async def test_a_loop_that_catches_sigxcpu_is_still_stopped() -> None:
    program = "import signal\nsignal.signal(signal.SIGXCPU, lambda *_: None)\nwhile True:\n    pass\n"
    result = await sandbox(cpu_seconds=1, wall_seconds=300).run(program)
    assert result.status is SandboxStatus.TIMEOUT
    assert result.cpu_seconds >= 1


async def test_a_sleeping_program_is_stopped_by_the_wall_clock() -> None:
    box = sandbox(wall_seconds=1)
    result = await box.run("import time\ntime.sleep(3600)")
    assert result.status is SandboxStatus.TIMEOUT
    assert "wall-clock limit of 1 s" in result.reason
    assert result.exit_code is None
    await assert_no_sandbox_processes_left(box.settings)
    await assert_still_serving(box)


async def test_cancelling_a_run_kills_the_program() -> None:
    box = sandbox(wall_seconds=300)
    run = asyncio.ensure_future(box.run("import time\ntime.sleep(3600)"))
    deadline = time.monotonic() + TEARDOWN_S
    while not sandbox_processes(box.settings) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert sandbox_processes(box.settings), "the program never started"
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    await assert_no_sandbox_processes_left(box.settings)
    await assert_still_serving(box)


# --- memory, processes, output ---------------------------------------------------------------


async def test_a_huge_allocation_fails_with_a_memory_status() -> None:
    box = sandbox(memory_mib=128)
    result = await box.run("block = bytearray(4 * 1024 ** 3)\nprint('allocated')")
    assert result.status is SandboxStatus.MEMORY
    assert "128 MiB" in result.reason
    assert result.stdout == ""
    await assert_still_serving(box)


async def test_growing_memory_step_by_step_hits_the_limit_too() -> None:
    program = "blocks = []\nwhile True:\n    blocks.append(bytearray(8 * 1024 * 1024))\n"
    result = await sandbox(memory_mib=128).run(program)
    assert result.status is SandboxStatus.MEMORY


async def test_a_fork_bomb_is_held_at_the_process_limit() -> None:
    box = sandbox(max_processes=8)
    program = "import os\nwhile True:\n    os.fork()\n"
    result = await box.run(program)
    assert result.status is SandboxStatus.FORBIDDEN
    assert "Resource temporarily unavailable" in result.reason
    await assert_no_sandbox_processes_left(box.settings)
    await assert_still_serving(box)


RETRYING_FORK_BOMB = """
import os, time
while True:
    try:
        os.fork()
    except OSError:
        time.sleep(0.01)
"""
SHELL_FORK_BOMB = """
import subprocess, time
subprocess.run(['/bin/bash', '-c', ':(){ :|:& };:'])
time.sleep(3600)
"""


@pytest.mark.parametrize("program", [RETRYING_FORK_BOMB, SHELL_FORK_BOMB], ids=["retrying", "shell"])
async def test_a_fork_bomb_that_keeps_going_is_stopped_and_cleaned_up(program: str) -> None:
    box = sandbox(max_processes=8, cpu_seconds=1, wall_seconds=3)
    result = await box.run(program)
    assert result.status is SandboxStatus.TIMEOUT
    await assert_no_sandbox_processes_left(box.settings)
    await assert_still_serving(box)


async def test_huge_output_is_cut_at_the_limit() -> None:
    box = sandbox(max_output_bytes=4096)
    result = await box.run("while True:\n    print('x' * 1000)\n")
    assert result.status is SandboxStatus.OUTPUT_LIMIT
    assert len(result.stdout) == 4096
    assert set(result.stdout) == {"x", "\n"}
    await assert_still_serving(box)


async def test_huge_error_output_is_cut_at_the_limit_too() -> None:
    result = await sandbox(max_output_bytes=4096).run(
        "import sys\nwhile True:\n    sys.stderr.write('e' * 1000)\n"
    )
    assert result.status is SandboxStatus.OUTPUT_LIMIT
    assert len(result.stderr) == 4096


async def test_filling_the_working_directory_stops_at_its_size() -> None:
    box = sandbox(workdir_mib=4)
    program = (
        "with open('big.bin', 'wb') as f:\n    for _ in range(64):\n        f.write(bytes(1024 * 1024))\n"
    )
    result = await box.run(program)
    assert result.status is SandboxStatus.FORBIDDEN
    assert "File too large" in result.reason or "No space left" in result.reason


# --- files ---------------------------------------------------------------------------------------


async def test_files_outside_the_sandbox_cannot_be_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("the-secret-value")
    program = (
        "import os\n"
        f"for path in ['/etc/passwd', '/etc/shadow', '/root', {str(secret)!r}, '/proc/1/root/etc/passwd']:\n"
        "    try:\n"
        "        print(path, 'READ', open(path).read()[:100])\n"
        "    except OSError as error:\n"
        "        print(path, 'failed', type(error).__name__)\n"
        "print(sorted(os.listdir('/')))\n"
    )
    result = await sandbox().run(program)
    assert result.ok
    assert "READ" not in result.stdout
    assert "the-secret-value" not in result.stdout
    assert "root:" not in result.stdout
    # Only the interpreter's tree, the program's directory and minimal /dev and /proc exist.
    assert "'etc'" not in result.stdout and "'home'" not in result.stdout and "'work'" not in result.stdout


async def test_files_outside_the_sandbox_cannot_be_written(tmp_path: Path) -> None:
    outside = tmp_path / "written-from-the-sandbox.txt"
    host_tmp = Path("/tmp") / f"rc-sandbox-escape-{os.getpid()}"
    # The memory file systems bubblewrap makes (its root, /dev and /dev/shm) are read-only
    # too: only the size-limited working directory takes writes.
    in_memory = (Path("/escape.txt"), Path("/dev/escape.txt"), Path("/dev/shm/escape.txt"))
    for target in (outside, host_tmp, Path("/usr/lib/escape.txt"), *in_memory):
        result = await sandbox().run(f"open({str(target)!r}, 'w').write('escaped')")
        assert not result.ok, f"writing {target} succeeded"
        assert not target.exists()
    read_only = await sandbox().run("open('/usr/escape.txt', 'w').write('x')")
    assert read_only.status is SandboxStatus.FORBIDDEN
    assert "Read-only file system" in read_only.reason


# --- network -------------------------------------------------------------------------------------


async def test_a_tcp_server_on_the_host_loopback_cannot_be_reached() -> None:
    connections = 0

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    server = await asyncio.start_server(count, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        # The server is reachable from here: the test would notice a connection.
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await asyncio.sleep(0.1)
        assert connections == 1
        program = (
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5)\nprint('connected')"
        )
        result = await sandbox().run(program)
    finally:
        server.close()
        await server.wait_closed()
    assert result.status is SandboxStatus.FORBIDDEN
    assert "Connection refused" in result.reason
    assert connections == 1
    assert "connected" not in result.stdout


async def test_a_unix_socket_of_the_host_cannot_be_reached(tmp_path: Path) -> None:
    path = tmp_path / "host.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen()
    try:
        program = (
            f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({str(path)!r})\nprint('connected')"
        )
        result = await sandbox().run(program)
    finally:
        listener.close()
    assert not result.ok
    assert "connected" not in result.stdout


async def test_the_only_network_interface_is_the_sandboxs_own_loopback() -> None:
    result = await sandbox().run("import socket\nprint([name for _, name in socket.if_nameindex()])")
    assert (result.status, result.stdout) == (SandboxStatus.OK, "['lo']\n")


# --- processes and identity -------------------------------------------------------------------


async def test_the_program_cannot_kill_its_caller() -> None:
    caller = os.getpid()
    program = (
        "import os, signal\n"
        f"for pid in ({caller}, os.getppid()):\n"
        "    try:\n"
        "        os.kill(pid, signal.SIGKILL)\n"
        "        print(pid, 'signalled')\n"
        "    except OSError as error:\n"
        "        print(pid, type(error).__name__)\n"
        "os.kill(-1, signal.SIGKILL)\n"
    )
    box = sandbox()
    result = await box.run(program)
    # The caller's pid does not exist in the sandbox; kill(-1) reaches the sandbox's own only.
    assert f"{caller} ProcessLookupError" in result.stdout
    assert not result.ok
    await assert_still_serving(box)


async def test_a_daemon_that_escapes_with_setsid_dies_with_the_run() -> None:
    box = sandbox()
    program = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        while True:\n"
        "            time.sleep(1)\n"
        "    os._exit(0)\n"
        "print('parent done')\n"
    )
    result = await box.run(program)
    assert (result.status, result.stdout) == (SandboxStatus.OK, "parent done\n")
    await assert_no_sandbox_processes_left(box.settings)


async def test_the_program_runs_unprivileged_with_a_clean_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RC_TEST_API_KEY", "sk-do-not-leak")
    program = "import os\nprint(os.getuid(), os.getgid(), os.getgroups())\nprint(sorted(os.environ))"
    result = await sandbox().run(program)
    uid_line, environ_line = result.stdout.splitlines()
    uid, gid, groups = uid_line.split(" ", 2)
    assert int(uid) != 0 and int(uid) != os.getuid() and gid == uid and groups == "[]"
    assert "sk-do-not-leak" not in result.stdout
    # bubblewrap sets PWD; the rest is the sandbox's own short list.
    assert environ_line == "['HOME', 'LANG', 'PATH', 'PWD', 'TMPDIR']"


async def test_runs_leave_no_descriptors_or_children_behind() -> None:
    box = sandbox(wall_seconds=1, max_output_bytes=1024)
    await assert_still_serving(box)  # the probe's own descriptors are settled
    before = len(os.listdir("/proc/self/fd"))
    programs = ["print(1)", "1 / 0", "import time\ntime.sleep(60)", "while True:\n    print('x')"]
    for program in programs * 3:
        await box.run(program)
    cancelled = asyncio.ensure_future(box.run("import time\ntime.sleep(60)"))
    await asyncio.sleep(0.2)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await assert_no_sandbox_processes_left(box.settings)
    assert len(os.listdir("/proc/self/fd")) == before


# --- refusing to run unconfined -------------------------------------------------------------------


async def test_without_bubblewrap_the_sandbox_refuses_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SandboxUnavailableError, match="bwrap"):
        await sandbox().run("print('unconfined')")


async def test_a_missing_interpreter_is_refused() -> None:
    with pytest.raises(SandboxUnavailableError, match="/usr/bin/no-such-python"):
        await sandbox(python="/usr/bin/no-such-python").run("print(1)")


@pytest.fixture
def sigchld_ignored() -> Iterator[None]:
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGCHLD, previous)


@pytest.mark.usefixtures("sigchld_ignored")
async def test_a_caller_that_ignores_sigchld_is_refused() -> None:
    with pytest.raises(SandboxUnavailableError, match="SIGCHLD"):
        await sandbox().run("print(1)")
