"""Redis faults under a running cluster: SHUTDOWN and restart, SIGKILL, SIGSTOP (docs/security.md).

The secure application (tests/e2e/secure_app.py) has a Redis of its own, with an append-only
file, that these tests stop and start; its clients have 1 s socket and connect timeouts (the
defaults are 5 s and 2 s), which shortens the outages the tests need without changing what they
show. Requests in flight ask the scripted engine to take a few seconds, so they are in the middle
of their search when Redis goes away. After every test: no tree left `running`, nothing in
admission, every ledger settled.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from cluster.local import LocalCluster
from tests.e2e.secure_app import SecureApp, ask, auth, secure_app, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEADLINE_S = 20.0  # the secure app's effort deadline


@pytest.fixture(scope="module")
def secure(cluster: LocalCluster) -> Iterator[SecureApp]:
    with secure_app(cluster) as running:
        yield running


@pytest.fixture(autouse=True)
def quiet_after(secure: SecureApp) -> Iterator[None]:
    yield
    if not secure.redis.running:
        secure.redis.restart()
    secure.wait_healthy(timeout_s=60)
    secure.check_quiet(timeout_s=60)


def _post(secure: SecureApp, question: str, timeout_s: float = 120) -> tuple[httpx.Response, float]:
    """The response, and when it came (time.monotonic())."""
    response = httpx.post(
        f"{secure.url}/v1/chat/completions", json=ask(question), headers=auth("acme"), timeout=timeout_s
    )
    return response, time.monotonic()


def _in_flight(secure: SecureApp, n: int, wait_s: float) -> Callable[[], list[tuple[httpx.Response, float]]]:
    """Start n requests that take about wait_s of engine time; returns a join that gives each
    response and when it came."""
    outcomes: list[tuple[httpx.Response, float]] = []

    def one(i: int) -> None:
        outcomes.append(_post(secure, f"What is {i} + 3? wait {wait_s}s"))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()

    def join() -> list[tuple[httpx.Response, float]]:
        for thread in threads:
            thread.join()
        return outcomes

    return join


def _answer_or_clear_error(response: httpx.Response) -> None:
    if response.status_code == 200:
        assert response.json()["choices"][0]["message"]["content"]
        return
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert response.status_code in (500, 503, 504), response.text
    assert "Traceback" not in error["message"]


def _finished_tree(secure: SecureApp) -> str:
    response, _ = _post(secure, "What is 2 + 3?")
    assert response.status_code == 200, response.text
    tree_id: str = response.json()["reasoning"]["tree_id"]
    return tree_id


def _readable(secure: SecureApp, tree_id: str) -> dict[str, Any]:
    response = httpx.get(f"{secure.url}/v1/trees/{tree_id}", headers=auth("acme"), timeout=30)
    assert response.status_code == 200, response.text
    tree: dict[str, Any] = response.json()
    return tree


def _first_success_after(secure: SecureApp, since: float, within_s: float) -> float:
    """Seconds from `since` to the first answered request, trying until `within_s` passed."""
    while True:
        response, _ = _post(secure, "What is 2 + 3?", timeout_s=30)
        if response.status_code == 200:
            return time.monotonic() - since
        assert time.monotonic() - since < within_s, response.text
        time.sleep(0.2)


def test_shutdown_and_restart_keeps_finished_trees(secure: SecureApp) -> None:
    finished = _finished_tree(secure)
    join = _in_flight(secure, 3, wait_s=4)
    time.sleep(1.5)
    stopped_at = time.monotonic()
    with secure.redis_client() as redis:
        # SHUTDOWN writes and syncs the append-only file, then the server exits.
        redis.shutdown()
    wait_for("redis to exit", lambda: (not secure.redis.running) or None, 10)
    for response, came in join():
        _answer_or_clear_error(response)
        # In flight when Redis left: each ends within 10 s of it, not at its deadline.
        assert came - stopped_at < 10, came - stopped_at
    restarted = time.monotonic()
    secure.redis.restart()
    assert _first_success_after(secure, restarted, within_s=5) < 5
    assert _readable(secure, finished)["meta"]["status"] == "done"


def test_killed_redis_fails_fast_and_recovers_without_a_restart_of_the_cluster(secure: SecureApp) -> None:
    finished = _finished_tree(secure)
    assert secure.redis.pid is not None
    os.kill(secure.redis.pid, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(
        "/healthz to say 503",
        lambda: httpx.get(f"{secure.url}/healthz", timeout=10).status_code == 503 or None,
        timeout_s=5,
    )
    assert time.monotonic() - killed < 5
    asked = time.monotonic()
    response, came = _post(secure, "What is 2 + 3?")
    assert response.status_code == 503 and came - asked < 5, (response.text, came - asked)
    assert response.headers["retry-after"]
    assert response.json()["error"]["code"] == "service_unavailable"
    restarted = time.monotonic()
    secure.redis.restart()
    assert _first_success_after(secure, restarted, within_s=10) < 10
    secure.wait_healthy(timeout_s=10)
    assert _readable(secure, finished)["meta"]["status"] == "done"


def test_stopped_redis_answers_every_request_within_its_deadline(secure: SecureApp) -> None:
    started = time.monotonic()
    join = _in_flight(secure, 3, wait_s=3)
    time.sleep(1.0)
    assert secure.redis.pid is not None
    os.kill(secure.redis.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        during, came = _post(secure, "What is 5 + 3?", timeout_s=DEADLINE_S + 30)
        health = httpx.get(f"{secure.url}/healthz", timeout=10)
        assert health.status_code == 503
        time.sleep(max(0.0, 12 - (time.monotonic() - stopped)))
    finally:
        os.kill(secure.redis.pid, signal.SIGCONT)
    _answer_or_clear_error(during)
    assert came - stopped < DEADLINE_S + 10, came - stopped
    for response, came in join():
        _answer_or_clear_error(response)
        assert came - started < DEADLINE_S + 10, came - started
    # The cleanup in quiet_after checks that nothing is left running now that Redis is back.
