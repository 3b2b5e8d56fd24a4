"""A real local cluster (Redis, Ray Serve, vLLM on CPU) with effort-budget autoscaling on.

A burst of `high` requests makes the branch-generator deployment scale from 1 to 2 replicas
(seen in `serve.status()`), and back to 1 once idle; a tenant over its reasoning-token
ceiling is degraded one effort (recorded on the response and the tree) or answered 429 with
Retry-After. Heavy: two vLLM engines on two cores. Run it alone, under the engine lock:

    flock /tmp/engine.lock .venv/bin/pytest tests/autoscale/test_autoscale_serve.py
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cluster.auth import hash_key
from cluster.local import APP_NAME, LocalCluster
from deployments.errors import replica_states
from deployments.workers import GENERATOR_DEPLOYMENT
from tests.plumbing import plumbing_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KEYS = {"burst": "key-burst", "capped": "key-capped"}
# Waves of high requests the burst test sends at most while the second engine starts.
MAX_WAVES = 6

OVERRIDES: dict[str, Any] = {
    # Tiny budgets: requests are quick on the CPU build.
    "efforts": {
        "low": {"max_reasoning_tokens": 32, "max_tokens_per_branch": 32},
        "medium": {"max_reasoning_tokens": 128, "max_tokens_per_branch": 32},
        "high": {"max_reasoning_tokens": 264, "max_tokens_per_branch": 32, "deadline_s": 120},
    },
    # Two engines must fit on two cores next to the other deployments.
    "deployments": {"generator": {"num_cpus": 0.5}},
    "autoscaling": {
        "enabled": True,
        "look_back_period_s": 2.0,
        "generator": {
            "max_replicas": 2,
            # A replica counts as 8 sequences' worth and is planned at 10%: a burst of a few
            # hundred tokens per second asks for a second replica.
            "max_seqs": 8,
            "target_utilization": 0.1,
            "downscale_delay_s": 5.0,
        },
        "verifier": {"min_replicas": 1, "max_replicas": 1, "scale_to_zero_delay_s": None},
        "planner": {"max_replicas": 1},
    },
    "auth": {"tenants": {name: {"api_key_sha256": hash_key(key)} for name, key in KEYS.items()}},
    "admission": {"enabled": True, "tenant_max_tokens_in_flight": {"capped": 400}, "on_overload": "degrade"},
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    # Replicas and handles push metrics every second instead of every ten (read at Ray start).
    os.environ["RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S"] = "1"
    os.environ["RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S"] = "1"
    config = plumbing_config(OVERRIDES)
    with LocalCluster(config, port=_free_port(), grpc_port=_free_port()) as running:
        _wait_healthy(running.url)
        yield running


def _wait_healthy(url: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", headers=_auth("burst"), timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise AssertionError("the cluster did not become healthy")


def _auth(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[tenant]}"}


def _ask(url: str, tenant: str, effort: str, question: str) -> httpx.Response:
    messages = [{"role": "user", "content": question}]
    body = {"model": "default", "messages": messages, "reasoning_effort": effort}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=_auth(tenant), timeout=400)


def _in_parallel(calls: list[Any]) -> list[httpx.Response]:
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except Exception as exc:  # reported by the assertion below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        assert isinstance(result, httpx.Response), result
    return results


def _generator_replicas() -> dict[str, int]:
    return replica_states(APP_NAME, GENERATOR_DEPLOYMENT)


def test_tenant_ceiling_degrades_then_rejects_with_retry_after(cluster: LocalCluster) -> None:
    responses = _in_parallel(
        [lambda i=i: _ask(cluster.url, "capped", "high", f"What is {i + 2} times 3?") for i in range(3)]
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 429], [r.text[:300] for r in responses]
    rejected = next(r for r in responses if r.status_code == 429)
    assert int(rejected.headers["Retry-After"]) >= 1
    error = rejected.json()["error"]
    assert error["type"] == "rate_limit_error" and "ceiling of 400" in error["message"]
    answered = [r.json()["reasoning"] for r in responses if r.status_code == 200]
    efforts = sorted(r["effort"] for r in answered)
    assert efforts == ["high", "medium"]
    degraded = next(r for r in answered if r["effort"] == "medium")
    assert degraded["admission"]["degraded"] is True
    assert degraded["admission"]["requested_effort"] == "high"
    assert "degraded high->medium" in degraded["admission"]["reason"]
    tree = httpx.get(f"{cluster.url}/v1/trees/{degraded['tree_id']}", headers=_auth("capped"), timeout=30)
    assert tree.status_code == 200 and "requested_effort" in tree.text
    # Every exit path released its tokens: the tenant can run a high request again.
    again = _ask(cluster.url, "capped", "high", "What is 7 plus 5?")
    assert again.status_code == 200 and again.json()["reasoning"]["effort"] == "high"


def _wait_for_one_generator(timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _generator_replicas() != {"RUNNING": 1}:
        time.sleep(1)
    assert _generator_replicas() == {"RUNNING": 1}


def test_burst_of_high_requests_scales_generators_up_then_down(cluster: LocalCluster) -> None:
    # The test above may have asked for a second engine already: start from one, idle.
    _wait_for_one_generator(240)
    seen: list[dict[str, int]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(_generator_replicas())
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.monotonic()
    try:
        # Waves keep demand up until the second engine runs: it takes 20-75 s to start on two
        # loaded cores, longer than one wave, and demand that falls to zero while it starts
        # rightly stops it before it ever runs.
        for wave in range(MAX_WAVES):
            responses = _in_parallel(
                [
                    lambda i=i, wave=wave: _ask(cluster.url, "burst", "high", f"Compute {i + 3 + wave} * 17.")
                    for i in range(6)
                ]
            )
            assert all(r.status_code == 200 for r in responses), [r.text[:200] for r in responses]
            if any(s.get("RUNNING", 0) >= 2 for s in seen):
                break
        assert any(s.get("RUNNING", 0) >= 2 for s in seen), seen[-5:]
        scaled_up_after = time.monotonic() - started
        # Idle: demand falls to 0 and after the 5 s downscale delay the extra replica goes.
        _wait_for_one_generator(180)
    finally:
        stop.set()
        watcher.join(timeout=5)
    print(f"generator scaled to 2 running replicas {scaled_up_after:.0f} s after the burst began")
