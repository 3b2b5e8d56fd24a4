"""`reasoning-cluster up` as a user runs it: serves, answers, and Ctrl-C leaves nothing behind.

It starts its own cluster, so it lives apart from the shared session cluster of tests/e2e
(and runs before it: two engines at once would share this machine's two cores).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from cluster.models import SMALL_MODEL

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

START_TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"reasoning-cluster up exited early with {process.returncode}"
        try:
            if httpx.get(f"{url}/healthz", timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass  # not listening yet: keep polling until the deadline
        time.sleep(1)
    raise AssertionError(f"{url} was not healthy within {START_TIMEOUT_S} s")


def test_up_serves_and_ctrl_c_stops_every_process() -> None:
    port, grpc_port = _free_port(), _free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        # The small model: this test is about starting and stopping processes, not answers.
        [
            sys.executable,
            "-m",
            "cluster.cli",
            "up",
            "--port",
            str(port),
            "--grpc-port",
            str(grpc_port),
            "--model",
            SMALL_MODEL,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_healthy(url, process)
        descendants = psutil.Process(process.pid).children(recursive=True)
        names = {p.name() for p in descendants}
        assert any("redis-server" in n for n in names) and any("raylet" in n for n in names), names
        response = httpx.post(
            f"{url}/v1/chat/completions",
            timeout=120,
            json={
                "model": "default",
                "messages": [{"role": "user", "content": "What is 6 * 7?"}],
                "reasoning_effort": "low",
            },
        )
        assert response.status_code == 200, response.text
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 0
        _gone, alive = psutil.wait_procs(descendants, timeout=30)
        assert not alive, f"left running after Ctrl-C: {[(p.pid, p.name()) for p in alive]}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = process.stdout.read() if process.stdout else ""
    assert f"serving on {url}" in output
    assert f"gRPC (reasoning.v1.Reasoning): 127.0.0.1:{grpc_port}" in output
