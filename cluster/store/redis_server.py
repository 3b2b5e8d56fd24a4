"""A real `redis-server` child process for tests and the local embedded cluster.

Storage is always exercised against the real server (never an in-Python imitation), so
behaviour such as Lua atomicity, TTL expiry and stream trimming is Redis' own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

HOST = "127.0.0.1"
_FALLBACK_DIRS = ("/usr/sbin", "/usr/bin")
_LOG_TAIL_LINES = 30
# A free port picked by us can be taken by someone else before redis binds it.
_PORT_ATTEMPTS = 3


class RedisServerError(RuntimeError):
    """redis-server is missing, did not start, or did not answer PING in time."""


def find_redis_server() -> str:
    """Path of the redis-server binary, or a RedisServerError that says how to install it."""
    found = shutil.which("redis-server")
    if found:
        return found
    for directory in _FALLBACK_DIRS:
        candidate = Path(directory) / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise RedisServerError(
        "redis-server binary not found on PATH or in /usr/sbin, /usr/bin; "
        "install it with `apt-get install redis-server`"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedRedis:
    """Runs redis-server on 127.0.0.1 in a throwaway directory, with an append-only file.

    Every write is in the AOF before its reply is sent (fsynced every second), so a server
    that stops, crashes or is killed and is then `restart`ed on the same port still holds
    every finished tree. No RDB snapshots: forking a copy of the data set is not needed.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        binary: str | None = None,
        startup_timeout_s: float = 10.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        self._requested_port = port
        self._binary = binary
        self._startup_timeout_s = startup_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self.pid: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RedisServerError("EmbeddedRedis is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> EmbeddedRedis:
        """Start the server and return once it answers PING."""
        if self._process is not None:
            raise RedisServerError(f"EmbeddedRedis already started (pid {self.pid})")
        binary = self._binary or find_redis_server()
        self._tmpdir = tempfile.TemporaryDirectory(prefix="embedded-redis-")
        attempts = 1 if self._requested_port else _PORT_ATTEMPTS
        for attempt in range(attempts):
            port = self._requested_port or _free_port()
            try:
                self._launch(binary, port)
                self._wait_ready()
                return self
            except RedisServerError:
                exited = self._process is not None and self._process.poll() is not None
                self._terminate()
                if not exited or attempt == attempts - 1:
                    self._cleanup_dir()
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _launch(self, binary: str, port: int) -> None:
        assert self._tmpdir is not None
        workdir = self._tmpdir.name
        args = [
            binary,
            "--port", str(port),
            "--bind", HOST,
            "--dir", workdir,
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            # Trees, leases and ledgers must never be evicted (docs/security.md, Redis faults).
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip
        with open(self._log_path, "ab") as log:
            # The child keeps its own copy of the descriptor; ours can close right away.
            self._process = subprocess.Popen(
                args, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.pid = self._process.pid
        self._port = port

    @property
    def _log_path(self) -> Path:
        assert self._tmpdir is not None
        return Path(self._tmpdir.name) / "redis.log"

    def _log_tail(self) -> str:
        try:
            lines = self._log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-_LOG_TAIL_LINES:]) or "(empty log)"

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self._startup_timeout_s
        client = redis.Redis(host=HOST, port=self.port, socket_timeout=1.0, protocol=2)
        try:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise RedisServerError(
                        f"redis-server exited with code {self._process.returncode} "
                        f"on port {self.port}; log:\n{self._log_tail()}"
                    )
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                    # Another server already on the port would answer PING too; only
                    # our own process id proves that *this* server is up.
                    if client.info("server").get("process_id") == self.pid:
                        return
                time.sleep(0.05)
        finally:
            client.close()
        raise RedisServerError(
            f"redis-server (pid {self.pid}) did not answer PING on port {self.port} within "
            f"{self._startup_timeout_s}s; log:\n{self._log_tail()}"
        )

    def restart(self) -> None:
        """Start the server again on the same port and directory, from its append-only file.

        For a server that exited (SHUTDOWN, a crash, SIGKILL); one still running is stopped first.
        """
        if self._tmpdir is None or self._port is None:
            raise RedisServerError("EmbeddedRedis was never started")
        self._terminate()
        self._launch(self._binary or find_redis_server(), self._port)
        self._wait_ready()

    def stop(self) -> None:
        """Terminate the recorded process, kill it if it lingers, remove its directory."""
        self._terminate()
        self._cleanup_dir()

    def _terminate(self) -> None:
        process = self._process
        if process is None:
            return
        # Popen signals its own recorded pid and refuses once it has reaped the child,
        # so this can never hit an unrelated process that reused the pid.
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=self._stop_timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=self._stop_timeout_s)
        self._process = None

    def _cleanup_dir(self) -> None:
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
