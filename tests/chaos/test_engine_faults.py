"""Faults on the real stack (Ray Serve, vLLM, Redis): engines that die mid-request, a deadline
that passes, every error a client can meet, each answered with a clean body.

One cluster with two branch-generators for the module: killing one engine costs a running
request only time; killing both makes new requests a quick 503 with Retry-After until Serve
has replaced them, and then the cluster answers again without a restart.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest
from ray._private import state as ray_state

from cluster.auth import hash_key
from cluster.local import APP_NAME, LocalCluster
from deployments.errors import replica_states
from deployments.workers import GENERATOR_DEPLOYMENT
from tests.e2e.conftest import free_port
from tests.plumbing import plumbing_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KEY = "chaos-key-0123456789"
# What a client must never see: escape codes, file paths, pids, actor ids, tracebacks.
LEAKS = re.compile(r"\x1b\[|/work/|/usr/|\.py\b|pid=|actor_id|Traceback|File \"|0x[0-9a-f]{6}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    config = plumbing_config(
        {
            # Two engines on a 2-core machine: half a CPU each leaves room for the other replicas.
            "deployments": {"generator": {"num_replicas": 2, "num_cpus": 0.5}},
            "auth": {"tenants": {"chaos": {"api_key_sha256": hash_key(KEY)}}},
            # A deadline no search can meet with a chain: the no-candidate path.
            "efforts": {"low": {"deadline_s": 0.01}},
        }
    )
    with LocalCluster(config, port=free_port(), grpc_port=free_port()) as running:
        yield running


def ask(cluster: LocalCluster, effort: str, request_id: str | None = None, **extra: Any) -> httpx.Response:
    body = {
        "model": "default",
        "messages": [{"role": "user", "content": "What is 12 * 13?"}],
        "reasoning_effort": effort,
        "task": "math",
        **extra,
    }
    headers = {"Authorization": f"Bearer {KEY}"}
    if request_id:
        headers["X-Request-Id"] = request_id
    return httpx.post(f"{cluster.url}/v1/chat/completions", json=body, headers=headers, timeout=400)


def assert_clean_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert not LEAKS.search(error["message"]), error["message"]
    assert "\n" not in error["message"]
    return error


def engine_pids() -> dict[str, int]:
    """Each branch-generator replica's id (as tree nodes record it) -> its engine core's pid.

    Read from Ray's actor table in its GCS (the local cluster runs no dashboard, so Ray's
    public state API, which asks the dashboard, is not there).
    """
    engines = {}
    for actor in ray_state.actors().values():
        name = actor.get("Name", "")
        if actor.get("State") != "ALIVE" or f"#{GENERATOR_DEPLOYMENT}#" not in name:
            continue
        replica = psutil.Process(actor["Pid"])
        # The engine core is the replica's own child process, which vLLM names after itself.
        (core,) = [child for child in replica.children(recursive=True) if "EngineCore" in child.name()]
        engines[name.rsplit("#", 1)[-1]] = core.pid
    return engines


def wait_for_engines(count: int, timeout_s: float = 300) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            engines = engine_pids()
        except (psutil.Error, ValueError):
            engines = {}
        if len(engines) == count:
            return engines
        time.sleep(1)
    raise AssertionError(f"{count} engines did not come up")


def test_errors_reach_clients_as_a_status_and_one_clean_sentence(cluster: LocalCluster) -> None:
    bad_json = httpx.post(
        f"{cluster.url}/v1/chat/completions",
        content=b"{not json",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert_clean_error(bad_json, 400)
    wrong_key = httpx.post(
        f"{cluster.url}/v1/chat/completions",
        json={"model": "default", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": "Bearer not-a-key"},
        timeout=30,
    )
    assert_clean_error(wrong_key, 401)
    # The deadline passes before any chain exists: 504, and the client is told not to retry now.
    late = ask(cluster, "low")
    error = assert_clean_error(late, 504)
    assert error["type"] == "timeout_error"
    assert late.headers["x-should-retry"] == "false" and int(late.headers["Retry-After"]) >= 1


def test_a_dead_engine_costs_a_running_request_only_time(cluster: LocalCluster) -> None:
    engines = wait_for_engines(2)
    tree_id = f"chaos-{uuid.uuid4().hex[:12]}"
    result: dict[str, httpx.Response] = {}
    request = threading.Thread(target=lambda: result.update(r=ask(cluster, "high", tree_id, seed=5)))
    request.start()
    tree = wait_for_nodes(cluster, tree_id, nodes=3)
    # Kill the engine that served the tree so far: its next calls must go elsewhere.
    (serving,) = {node["replica"] for node in tree["nodes"] if node["replica"]}
    psutil.Process(engines[serving]).kill()
    request.join(timeout=400)
    response = result["r"]
    assert response.status_code == 200, response.text
    reasoning = response.json()["reasoning"]
    assert response.json()["choices"][0]["message"]["content"]
    final = get_tree(cluster, reasoning["tree_id"])
    assert final["meta"]["status"] == "done" and final["budget"]["reserved"]["tokens"] == 0
    # The search went on with the other engine (or the one that replaced the dead one).
    assert {node["replica"] for node in final["nodes"] if node["replica"]} - {serving}


def test_without_any_engine_requests_get_a_quick_503_then_the_cluster_recovers(cluster: LocalCluster) -> None:
    engines = wait_for_engines(2)
    for core in engines.values():
        psutil.Process(core).kill()
    # Within seconds Serve sees both replicas fail their health checks and starts replacements;
    # while none runs, a new request is refused at once, with the time to come back.
    wait_for_running_generators(0)
    started = time.monotonic()
    response = ask(cluster, "medium")
    took_s = time.monotonic() - started
    assert_clean_error(response, 503)
    assert int(response.headers["Retry-After"]) >= 1
    assert took_s < 10
    # The replaced replicas serve again: no restart of the cluster.
    wait_for_engines(2)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        response = ask(cluster, "medium")
        if response.status_code == 200:
            return
        assert response.status_code == 503, response.text
        time.sleep(2)
    raise AssertionError("the cluster did not answer again after its engines were replaced")


def wait_for_running_generators(count: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if replica_states(APP_NAME, GENERATOR_DEPLOYMENT).get("RUNNING", 0) == count:
            return
        time.sleep(0.2)
    raise AssertionError(f"Serve never reported {count} running branch-generators")


def wait_for_nodes(cluster: LocalCluster, tree_id: str, nodes: int) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        response = read_tree(cluster, tree_id)
        if response.status_code == 200 and len(response.json()["nodes"]) >= nodes:
            tree: dict[str, Any] = response.json()
            return tree
        time.sleep(0.2)
    raise AssertionError("the search never got going")


def get_tree(cluster: LocalCluster, tree_id: str) -> dict[str, Any]:
    response = read_tree(cluster, tree_id)
    assert response.status_code == 200, response.text
    tree: dict[str, Any] = response.json()
    return tree


def read_tree(cluster: LocalCluster, tree_id: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {KEY}"}
    return httpx.get(f"{cluster.url}/v1/trees/{tree_id}", headers=headers, timeout=10)
