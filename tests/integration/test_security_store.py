"""Rate limits, the audit trail, saved answers and Redis faults against a real redis-server."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from autoscale.ratelimit import RateLimited, RateLimiter
from cluster.audit import AuditLog
from cluster.config import RateLimitSettings, RedisConfig
from cluster.store import BudgetLedger, KeySpace, TreeMeta, TreeStore
from cluster.store.connection import redis_client
from cluster.store.redis_server import EmbeddedRedis
from cluster.store.responses import ResponseStore
from deployments.recovery import Recovery

pytestmark = pytest.mark.integration


def _settings(**limits: object) -> RateLimitSettings:
    return RateLimitSettings.model_validate(limits)


async def test_token_bucket_allows_a_burst_then_429s_with_retry_after(redis_client: Redis) -> None:
    limiter = RateLimiter(redis_client, _settings(requests={"per_s": 0.5, "burst": 3}))
    for _ in range(3):
        await limiter.take("acme", "requests")
    with pytest.raises(RateLimited) as caught:
        await limiter.take("acme", "requests")
    assert caught.value.retry_after_s == 2
    assert "0.5 per second" in caught.value.message
    # Buckets are per caller and per kind.
    await limiter.take("beta", "requests")
    await limiter.take("acme", "reads")


async def test_bucket_refills_and_overrides_apply(redis_client: Redis) -> None:
    settings = _settings(
        requests={"per_s": 1, "burst": 1}, tenant_requests={"fast": {"per_s": 20, "burst": 1}}
    )
    limiter = RateLimiter(redis_client, settings)
    await limiter.take("fast", "requests")
    await asyncio.sleep(0.1)
    await limiter.take("fast", "requests")  # 20 per second: one token back after 50 ms
    await limiter.take("slow", "requests")
    with pytest.raises(RateLimited):
        await limiter.take("slow", "requests")


async def test_disabled_limits_take_nothing(redis_client: Redis) -> None:
    limiter = RateLimiter(redis_client, _settings(enabled=False, requests={"per_s": 0.01, "burst": 1}))
    for _ in range(5):
        await limiter.take("acme", "requests")
    assert await redis_client.keys("rc:ratelimit:*") == []


async def test_audit_records_who_read_what(redis_client: Redis) -> None:
    audit = AuditLog(redis_client, "rc", maxlen=100)
    await audit.record("ops:alice", "read_tree", "t-1", "acme", "granted")
    await audit.record("beta", "follow_events", "t-1", "acme", "denied")
    records = await audit.read()
    assert [(r.caller, r.action, r.tree_id, r.owner, r.outcome) for r in records] == [
        ("ops:alice", "read_tree", "t-1", "acme", "granted"),
        ("beta", "follow_events", "t-1", "acme", "denied"),
    ]
    assert abs(records[0].at - time.time()) < 60


async def test_saved_answer_expires_with_its_tree(redis_client: Redis) -> None:
    keys = KeySpace("rc")
    store, responses = TreeStore(redis_client, keys), ResponseStore(redis_client, keys)
    assert not await responses.save("gone", {"completion": {}})
    await store.create_tree(TreeMeta("t-1", "acme", "low", "single_chain"), active_ttl_s=30)
    assert await responses.save("t-1", {"completion": {"id": "chatcmpl-t-1"}})
    assert await responses.load("t-1") == {"completion": {"id": "chatcmpl-t-1"}}
    meta_ttl = await redis_client.pttl(keys.tree("t-1").meta)
    assert 0 < await redis_client.pttl(keys.tree("t-1").response) <= meta_ttl


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    """A server of the test's own, which it may stop, kill and restart."""
    with EmbeddedRedis() as server:
        yield server


def _fast(server: EmbeddedRedis, **overrides: object) -> RedisConfig:
    return RedisConfig.model_validate(
        {"url": server.url, "socket_timeout_s": 0.5, "connect_timeout_s": 0.5, **overrides}
    )


async def test_a_stopped_redis_fails_commands_within_the_socket_timeout(own_redis: EmbeddedRedis) -> None:
    client = redis_client(_fast(own_redis))
    assert await client.ping()
    assert own_redis.pid is not None
    os.kill(own_redis.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await client.set("k", "v")
        assert time.monotonic() - started < 3
    finally:
        os.kill(own_redis.pid, signal.SIGCONT)
    await client.aclose()


async def test_the_pool_is_bounded(own_redis: EmbeddedRedis) -> None:
    client = redis_client(_fast(own_redis, max_connections=2, pool_timeout_s=0.3, socket_timeout_s=5))
    blockers = [asyncio.create_task(client.blpop(["never"], timeout=2)) for _ in range(2)]
    await asyncio.sleep(0.2)
    started = time.monotonic()
    with pytest.raises(RedisConnectionError, match="No connection available"):
        await client.ping()
    assert time.monotonic() - started < 2
    await asyncio.gather(*blockers)
    await client.aclose()


async def test_password_file_is_used(own_redis: EmbeddedRedis, tmp_path: Path) -> None:
    admin = redis_client(_fast(own_redis))
    await admin.config_set("requirepass", "s3cret")
    await admin.aclose()
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    client = redis_client(_fast(own_redis, password_file=str(secret)))
    assert await client.ping()
    await client.config_set("requirepass", "")
    await client.aclose()


async def test_killed_redis_restarts_from_its_append_only_file(own_redis: EmbeddedRedis) -> None:
    client = redis_client(_fast(own_redis))
    store = TreeStore(client, KeySpace("rc"))
    await store.create_tree(TreeMeta("kept", "acme", "low", "single_chain", status="done"), 600)
    assert own_redis.pid is not None
    os.kill(own_redis.pid, signal.SIGKILL)
    with pytest.raises(RedisConnectionError):
        await client.ping()
    own_redis.restart()
    # The pool replaces the dead connections by itself: the next command just works.
    meta = await store.get_meta("kept")
    assert meta is not None and meta.owner == "acme"
    await client.aclose()


async def test_abandoned_tree_is_ended_once_no_planner_holds_it(redis_client: Redis) -> None:
    keys = KeySpace("rc")
    store, ledger = TreeStore(redis_client, keys), BudgetLedger(redis_client, keys)
    await store.create_tree(TreeMeta("t-1", "acme", "low", "single_chain"), active_ttl_s=600)
    await ledger.grant("t-1", {"tokens": 100})
    assert await ledger.reserve("t-1", "tokens", 40) == 40
    await redis_client.set(keys.tree("t-1").lease, "planner-a", px=600)
    recovery = Recovery(redis_client, store, ledger, tree_ttl_s=60, give_up_s=10)
    recovery.end_abandoned_tree("t-1", "the store was unreachable")
    await asyncio.sleep(0.3)
    meta = await store.get_meta("t-1")
    assert meta is not None and meta.status == "running"  # its planner's lease is still there
    await asyncio.sleep(1.5)  # the lease expired: the next attempt ends the tree
    meta = await store.get_meta("t-1")
    assert meta is not None and meta.status == "failed"
    snapshot = await ledger.snapshot("t-1")
    assert snapshot.reserved.get("tokens", 0) == 0 and snapshot.spent.get("tokens", 0) == 0
    events = await store.read_events("t-1")
    assert events[-1][1]["kind"] == "failed"
    assert 0 < await redis_client.pttl(keys.tree("t-1").meta) <= 60_000
