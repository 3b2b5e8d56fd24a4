"""The affinity router on real Ray Serve (loopback): three light replicas that answer with their id.

Calls of one tree land on one replica, different trees spread over all of them, calls without
a key are balanced, concurrent calls made while serving one request (as a planner makes them)
all land, and a tree whose replica is full or over the imbalance margin is served by another
replica. No engine runs here; tests/e2e checks the prefix cache on the real one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import ray
from ray import serve
from ray.actor import ActorHandle
from ray.serve.handle import DeploymentHandle

from cluster.local import LOOPBACK
from cluster.types import GenerationRequest
from deployments.routing import AFFINITY_ROUTER, preferred_replica

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPLICAS = 3
HOLD = "hold until the gate opens"


@pytest.fixture(scope="module")
def serve_running() -> Iterator[None]:
    """Serve on loopback: the session's Ray if a test cluster already runs one, else our own."""
    if ray.is_initialized():
        yield
        return
    ray.init(
        address="local",
        _node_ip_address=LOOPBACK,
        include_dashboard=False,
        num_cpus=2,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    try:
        serve.start(proxy_location="Disabled")
        yield
    finally:
        serve.shutdown()
        ray.shutdown()


def _gate() -> ActorHandle:
    # Defined here, not at module level: Ray pickles it by value, and workers cannot import
    # test modules.
    @ray.remote(num_cpus=0)
    class Gate:
        """Holds calls until it opens; counts the calls waiting at it."""

        def __init__(self) -> None:
            self._open = asyncio.Event()
            self._waiting = 0

        async def wait(self) -> None:
            self._waiting += 1
            await self._open.wait()

        async def waiting(self) -> int:
            return self._waiting

        async def open(self) -> None:
            self._open.set()

    return Gate.remote()


def _fanout_app(gate: ActorHandle, max_ongoing_requests: int, max_imbalance: int) -> Any:
    """Fanout (the ingress) in front of three Echo replicas behind the affinity router."""

    # Local for the same reason as Gate: Serve pickles them by value.
    class Fanout:
        """Makes concurrent Echo calls while serving one request, as a planner does: Serve
        gives them all the same internal request id."""

        def __init__(self, echo: DeploymentHandle) -> None:
            self._echo = echo

        async def __call__(self, key: str, calls: int) -> list[str]:
            request = GenerationRequest(prompt="p", n=1, max_tokens=1, temperature=0.0, affinity_key=key)
            return list(await asyncio.gather(*(self._echo.generate.remote(request) for _ in range(calls))))

    class Echo:
        """Answers a generate call with its replica id; HOLD prompts wait at the gate first."""

        def __init__(self, gate: ActorHandle) -> None:
            self._gate = gate

        async def generate(self, request: GenerationRequest) -> str:
            if request.prompt == HOLD:
                await self._gate.wait.remote()
            return str(serve.get_replica_context().replica_id.unique_id)

    options: dict[str, Any] = {
        "num_replicas": REPLICAS,
        "max_ongoing_requests": max_ongoing_requests,
        "ray_actor_options": {"num_cpus": 0},
        "request_router_config": {
            "request_router_class": AFFINITY_ROUTER,
            "request_router_kwargs": {"max_imbalance": max_imbalance},
        },
    }
    echo = serve.deployment(**options)(Echo).bind(gate)
    return serve.deployment(ray_actor_options={"num_cpus": 0})(Fanout).bind(echo)


@dataclass
class EchoApp:
    handle: DeploymentHandle
    fanout: DeploymentHandle
    gate: ActorHandle

    def ask(self, key: str | None, prompt: str = "p") -> Any:
        request = GenerationRequest(prompt=prompt, n=1, max_tokens=1, temperature=0.0, affinity_key=key)
        return self.handle.generate.remote(request)

    def replica_of(self, key: str | None) -> str:
        return str(self.ask(key).result(timeout_s=60))

    def hold(self, key: str, count: int) -> list[Any]:
        """`count` calls of `key` parked at the gate, each one there before the next is sent."""
        held = []
        for i in range(count):
            held.append(self.ask(key, HOLD))
            self._wait_for_waiting(i + 1)
        return held

    def _wait_for_waiting(self, count: int, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while ray.get(self.gate.waiting.remote()) < count:
            assert time.monotonic() < deadline, f"fewer than {count} calls reached the gate"
            time.sleep(0.05)


def _deploy(name: str, max_ongoing_requests: int, max_imbalance: int) -> Iterator[EchoApp]:
    gate = _gate()
    fanout = serve.run(_fanout_app(gate, max_ongoing_requests, max_imbalance), name=name, route_prefix=None)
    try:
        yield EchoApp(serve.get_deployment_handle("Echo", app_name=name), fanout, gate)
    finally:
        ray.get(gate.open.remote())
        serve.delete(name)
        ray.kill(gate)


@pytest.fixture(scope="module")
def lenient(serve_running: None) -> Iterator[EchoApp]:
    """A wide margin: a replica is passed over only when it is full (3 calls)."""
    yield from _deploy("affinity-lenient", max_ongoing_requests=3, max_imbalance=100)


@pytest.fixture(scope="module")
def strict(serve_running: None) -> Iterator[EchoApp]:
    """A margin of 1: a replica is passed over at 2 calls more than the least-loaded one."""
    yield from _deploy("affinity-strict", max_ongoing_requests=8, max_imbalance=1)


def test_calls_of_one_tree_land_on_one_replica(lenient: EchoApp) -> None:
    replicas = {lenient.replica_of("tree-one") for _ in range(12)}
    assert len(replicas) == 1


def test_trees_spread_over_every_replica_by_rendezvous_hash(lenient: EchoApp) -> None:
    placed = {f"tree-{i}": lenient.replica_of(f"tree-{i}") for i in range(60)}
    replica_ids = set(placed.values())
    assert len(replica_ids) == REPLICAS
    # Every handle computes the same placement from the replica ids alone.
    assert all(placed[key] == preferred_replica(key, replica_ids) for key in placed)


def test_calls_without_a_key_are_balanced(lenient: EchoApp) -> None:
    replicas = [lenient.replica_of(None) for _ in range(30)]
    assert len(set(replicas)) >= 2


def test_concurrent_calls_made_while_serving_one_request_all_land_on_the_tree_replica(
    lenient: EchoApp,
) -> None:
    home = lenient.replica_of("tree-fanout")
    replicas = lenient.fanout.remote("tree-fanout", 3).result(timeout_s=60)
    assert replicas == [home] * 3


def _tree_overflows_to_another_replica(app: EchoApp, key: str, held_calls: int) -> None:
    home = app.replica_of(key)
    held = app.hold(key, held_calls)
    try:
        overflow = app.replica_of(key)
    finally:
        ray.get(app.gate.open.remote())
    assert overflow != home
    assert [response.result(timeout_s=60) for response in held] == [home] * held_calls


def test_a_full_replica_passes_its_tree_to_another(lenient: EchoApp) -> None:
    _tree_overflows_to_another_replica(lenient, "tree-full", held_calls=3)


def test_a_replica_over_the_imbalance_margin_passes_its_tree_to_another(strict: EchoApp) -> None:
    # Two calls more than the idle replicas: over the margin of 1, far from full (8).
    _tree_overflows_to_another_replica(strict, "tree-busy", held_calls=2)
