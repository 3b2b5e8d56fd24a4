"""A second Serve application beside the session cluster's: tenants, ops, small limits, its own
Redis (which the fault tests stop, kill and restart) and a scripted branch-generator.

Everything but the engine is real: the gateway, planner and verifier deployments, Serve's
HTTP proxy on loopback, the Redis server. The scripted engine answers every call with the same
short chain, after waiting as long as the prompt asks ("wait 3s"), so a test controls how long
a request stays in flight; its token counts are its own words, as a real engine's are its own.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import cloudpickle
import httpx
from ray import serve
from redis import Redis

from autoscale.demand import RegistryKeys
from cluster.auth import hash_key
from cluster.config import ClusterConfig, load_config
from cluster.local import LocalCluster
from cluster.store.redis_server import EmbeddedRedis
from cluster.types import Completion, GenerationRequest, GenerationResult
from deployments.builder import build_app

APP = "secure"
ROUTE = "/secure"
KEYS = {"acme": "acme-key-0123456789", "beta": "beta-key-0123456789"}
OPS_KEY = "alice-ops-key-0123456789"
CHAIN = "Adding 2 and 3 gives 5 . The answer is 5 ."
_WAIT = re.compile(r"\bwait (\d+(?:\.\d+)?)s\b")

# Serve ships this module's classes by value: Ray's workers cannot import the tests package.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@serve.deployment
class ScriptedBranchGenerator:
    """The branch-generator's interface on a scripted engine."""

    def __init__(self, config: ClusterConfig) -> None:
        self._calls = 0

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        self._calls += 1
        wait = _WAIT.search(request.prompt)
        if wait is not None:
            await asyncio.sleep(min(float(wait.group(1)), 30.0))
        words = CHAIN.split(" ")[: request.max_tokens]
        finish = "stop" if len(words) == len(CHAIN.split(" ")) else "length"
        completion = Completion(" ".join(words), len(words), finish, cumulative_logprob=-1.0 * len(words))
        prompt_tokens = len(request.prompt.split())
        return GenerationResult((completion,) * request.n, prompt_tokens, 0, "scripted")

    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "replica": "scripted", "calls": self._calls}


def secure_config(redis_url: str, **overrides: Any) -> ClusterConfig:
    small_budget = {"max_reasoning_tokens": 64, "max_tokens_per_branch": 32, "deadline_s": 20}
    two_chains = {**small_budget, "strategy": "best_of_n", "max_branches": 2, "verifiers": ["arithmetic"]}
    base: dict[str, Any] = {
        "redis": {
            "url": redis_url,
            "key_prefix": "sec",
            # A stopped Redis costs a second per command, not five.
            "socket_timeout_s": 1.0,
            "connect_timeout_s": 1.0,
            "lease_ttl_s": 3.0,
        },
        "efforts": {
            "low": {**small_budget, "verifiers": ["arithmetic"]},
            "medium": two_chains,
            "high": two_chains,
        },
        "default_effort": "low",
        "deployments": {
            "gateway": {"max_queued_requests": 16, "max_ongoing_requests": 32},
            "generator": {"num_cpus": 0.1},
            "generator_affinity": {"enabled": False},
        },
        "auth": {
            "tenants": {name: {"api_key_sha256": hash_key(key)} for name, key in KEYS.items()},
            "ops": {"alice": {"api_key_sha256": hash_key(OPS_KEY)}},
        },
        "admission": {
            "enabled": True,
            "default_max_tokens_in_flight": 640,
            "on_overload": "reject",
            "rate_limits": {"requests": {"per_s": 20, "burst": 400}, "reads": {"per_s": 50, "burst": 1000}},
        },
        "http": {"events_wait_ms": 200, "max_event_waiters": 4},
    }
    return load_config().with_overrides(base).with_overrides(overrides)


def auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {OPS_KEY if who == 'ops' else KEYS[who]}"}


def ask(question: str = "What is 2 + 3?", **fields: Any) -> dict[str, Any]:
    return {"model": "default", "messages": [{"role": "user", "content": question}], **fields}


@dataclass
class SecureApp:
    cluster: LocalCluster
    redis: EmbeddedRedis
    config: ClusterConfig

    @property
    def url(self) -> str:
        return f"{self.cluster.url}{ROUTE}"

    def client(self, timeout_s: float = 60) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout_s)

    def redis_client(self) -> Redis:
        return Redis.from_url(self.redis.url, socket_timeout=5)

    def deploy(self) -> None:
        app = build_app(self.config, ScriptedBranchGenerator)
        serve.run(app, name=APP, route_prefix=ROUTE, blocking=False)
        self.wait_healthy()

    def wait_healthy(self, timeout_s: float = 180) -> None:
        wait_for("the secure app to be healthy", lambda: self.healthy() or None, timeout_s)

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=10).status_code == 200
        except httpx.HTTPError:
            return False

    def running_trees(self) -> list[str]:
        with self.redis_client() as redis:
            metas = list(redis.scan_iter(match="sec:{*}:meta", count=1000))
            return [m.decode() for m in metas if redis.hget(m, "status") == b"running"]

    def check_quiet(self, timeout_s: float = 60) -> None:
        """Once requests are over: no tree running, nothing in admission, ledgers settled."""
        wait_for("every tree to end", lambda: not self.running_trees() or None, timeout_s)
        registry = RegistryKeys("sec")
        with self.redis_client() as redis:
            wait_for("admission to empty", lambda: redis.hlen(registry.inflight) == 0 or None, timeout_s)
            assert redis.hlen(registry.queued) == 0
            for key in redis.scan_iter(match="sec:{*}:budget", count=1000):
                ledger = {k.decode(): int(v) for k, v in redis.hgetall(key).items()}
                assert ledger.get("reserved:tokens", 0) == 0, (key, ledger)
                assert ledger.get("spent:tokens", 0) <= ledger.get("granted:tokens", 0), (key, ledger)


def wait_for(what: str, probe: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def secure_app(cluster: LocalCluster, **overrides: Any) -> Iterator[SecureApp]:
    with EmbeddedRedis() as redis:
        app = SecureApp(cluster, redis, secure_config(redis.url, **overrides))
        app.deploy()
        try:
            yield app
        finally:
            serve.delete(APP)
