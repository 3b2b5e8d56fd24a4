"""Admission control against a real redis-server: ceilings, degrade, queue, 429 + Retry-After."""

from __future__ import annotations

import asyncio
import json

import pytest
from redis.asyncio import Redis

from autoscale.admission import AdmissionController, AdmissionRejected, EffortCost
from autoscale.demand import DemandReader, throughput_record
from cluster.config import AdmissionSettings
from cluster.store import KeySpace
from cluster.types import Effort

pytestmark = pytest.mark.integration

COSTS = {
    Effort.LOW: EffortCost(256, 1, 60.0),
    Effort.MEDIUM: EffortCost(1024, 0, 120.0),
    Effort.HIGH: EffortCost(2112, 8, 240.0),
}


def cost_of(effort: Effort) -> EffortCost:
    return COSTS[effort]


def _controller(redis: Redis, **settings: object) -> AdmissionController:
    defaults: dict[str, object] = {"enabled": True, "default_max_tokens_in_flight": 3000}
    return AdmissionController(redis, AdmissionSettings.model_validate({**defaults, **settings}))


async def test_ceiling_degrades_one_level_and_says_why(redis_client: Redis) -> None:
    control = _controller(redis_client, on_overload="degrade", default_max_tokens_in_flight=3200)
    first = await control.admit("acme", "tree-1", Effort.HIGH, cost_of)
    assert first.effort == Effort.HIGH and not first.degraded
    second = await control.admit("acme", "tree-2", Effort.HIGH, cost_of)
    assert second.effort == Effort.MEDIUM and second.degraded
    assert second.to_dict()["requested_effort"] == "high"
    assert "degraded high->medium: tenant 'acme' has 2112 reasoning tokens in flight" in second.reason
    # Another tenant has its own ceiling.
    other = await control.admit("globex", "tree-3", Effort.HIGH, cost_of)
    assert other.effort == Effort.HIGH
    demand = await control.demand()
    assert demand.tokens_in_flight_by_tenant == {"acme": 2112 + 1024, "globex": 2112}


async def test_degrade_that_still_does_not_fit_is_a_429_with_retry_after(redis_client: Redis) -> None:
    control = _controller(redis_client, on_overload="degrade")
    await control.admit("acme", "tree-1", Effort.HIGH, cost_of)
    await control.admit("acme", "tree-2", Effort.LOW, cost_of)  # 2368 held
    # Generators measured 1000 tokens/s; acme holds all of it: 2368 + 1024 - 3000 = 392 to free.
    await redis_client.hset(control.keys.throughput, "r1", throughput_record(1000.0))
    with pytest.raises(AdmissionRejected) as caught:
        await control.admit("acme", "tree-3", Effort.HIGH, cost_of)
    assert caught.value.retry_after_s == 1  # 392 / 1000 s, rounded up
    assert "no lower effort fits" in caught.value.message


async def test_reject_policy_and_retry_after_from_the_demand_model(redis_client: Redis) -> None:
    control = _controller(redis_client, on_overload="reject", default_max_tokens_in_flight=2200)
    await control.admit("acme", "tree-1", Effort.HIGH, cost_of)
    await redis_client.hset(control.keys.throughput, "r1", throughput_record(100.0))
    await redis_client.hset(control.keys.throughput, "r2", throughput_record(50.0))
    with pytest.raises(AdmissionRejected) as caught:
        await control.admit("acme", "tree-2", Effort.MEDIUM, cost_of)
    # 2112 + 1024 - 2200 = 936 tokens must drain at 150 tokens/s: 6.24 s -> 7.
    assert caught.value.retry_after_s == 7
    assert "overload policy is reject" in caught.value.message


async def test_projected_wait_past_the_deadline_degrades(redis_client: Redis) -> None:
    control = _controller(redis_client, default_max_tokens_in_flight=None)
    await control.admit("a", "tree-1", Effort.HIGH, cost_of)
    await control.admit("b", "tree-2", Effort.HIGH, cost_of)
    # 4224 tokens ahead at 20 tokens/s: a high request (2112 more) would take 316.8 s > 240 s;
    # a medium one 262.4 s > 120 s too: only one level of degradation, so it is rejected.
    await redis_client.hset(control.keys.throughput, "r1", throughput_record(20.0))
    with pytest.raises(AdmissionRejected) as caught:
        await control.admit("c", "tree-3", Effort.HIGH, cost_of)
    assert "would miss the 120 s deadline" in caught.value.message
    # (4224 + 1024) / 20 - 120 = 142.4 s until a medium request would fit.
    assert caught.value.retry_after_s == 143


async def test_queue_waits_for_room_and_is_visible_to_the_demand_model(redis_client: Redis) -> None:
    control = _controller(redis_client, on_overload="queue", queue_poll_s=0.05, max_queue_wait_s=5.0)
    held = await control.admit("acme", "tree-1", Effort.HIGH, cost_of)
    waiting = asyncio.create_task(control.admit("acme", "tree-2", Effort.HIGH, cost_of))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    demand = await control.demand()
    assert demand.queued_trees == 1 and demand.tokens_remaining == 2 * 2112
    assert await control.release(held) == 2112
    admitted = await asyncio.wait_for(waiting, 5)
    assert admitted.effort == Effort.HIGH and admitted.queued_s >= 0.3
    assert (await control.demand()).queued_trees == 0


async def test_queue_gives_up_with_429_after_max_wait(redis_client: Redis) -> None:
    control = _controller(redis_client, on_overload="queue", queue_poll_s=0.05, max_queue_wait_s=0.3)
    await control.admit("acme", "tree-1", Effort.HIGH, cost_of)
    with pytest.raises(AdmissionRejected) as caught:
        await control.admit("acme", "tree-2", Effort.HIGH, cost_of)
    assert "no room after queueing" in caught.value.message
    assert caught.value.retry_after_s >= 1
    assert await redis_client.hlen(control.keys.queued) == 0


async def test_a_full_queue_rejects_at_once(redis_client: Redis) -> None:
    control = _controller(
        redis_client, on_overload="queue", queue_poll_s=0.05, max_queue_wait_s=5.0, max_queued=1
    )
    held = await control.admit("acme", "tree-1", Effort.HIGH, cost_of)
    waiting = asyncio.create_task(control.admit("acme", "tree-2", Effort.HIGH, cost_of))
    await asyncio.sleep(0.3)
    with pytest.raises(AdmissionRejected) as caught:
        await control.admit("acme", "tree-3", Effort.HIGH, cost_of)
    assert "1 requests are queued already (the limit is 1)" in caught.value.message
    assert caught.value.retry_after_s >= 1
    await control.release(held)
    await control.release(await asyncio.wait_for(waiting, 5))
    assert await redis_client.hlen(control.keys.queued) == 0


async def test_release_is_idempotent_and_stale_entries_expire(redis_client: Redis) -> None:
    clock = [1000.0]
    control = AdmissionController(
        redis_client,
        AdmissionSettings(enabled=True, default_max_tokens_in_flight=3000, stale_after_deadline_s=10),
        clock=lambda: clock[0],
    )
    first = await control.admit("acme", "tree-1", Effort.HIGH, cost_of)
    assert await control.release(first) == 2112
    assert await control.release(first) == 0
    assert await redis_client.hget(control.keys.tenants, "acme") is None
    # A gateway dies holding a high request: its entry is dropped after deadline + 10 s.
    await control.admit("acme", "tree-2", Effort.HIGH, cost_of)
    clock[0] += 240 + 11
    again = await control.admit("acme", "tree-3", Effort.HIGH, cost_of)
    assert again.effort == Effort.HIGH
    assert int(await redis_client.hget(control.keys.tenants, "acme")) == 2112


async def test_concurrent_admissions_never_pass_the_ceiling(redis_client: Redis) -> None:
    control = _controller(redis_client, on_overload="reject", default_max_tokens_in_flight=10 * 256)
    results = await asyncio.gather(
        *(control.admit("acme", f"tree-{i}", Effort.LOW, cost_of) for i in range(40)), return_exceptions=True
    )
    admitted = [r for r in results if not isinstance(r, BaseException)]
    rejected = [r for r in results if isinstance(r, AdmissionRejected)]
    assert len(admitted) == 10 and len(rejected) == 30
    assert int(await redis_client.hget(control.keys.tenants, "acme")) == 2560


async def test_demand_reads_spending_from_the_tree_ledgers(redis_client: Redis) -> None:
    control = _controller(redis_client)
    await control.admit("acme", "tree-1", Effort.HIGH, cost_of)
    budget = KeySpace("rc").tree("tree-1").budget
    await redis_client.hset(budget, mapping={"spent:tokens": 112, "spent:verifier_calls": 3})
    demand = await DemandReader(redis_client, "rc", min_slack_s=2.0).read()
    assert demand.tokens_remaining == 2000 and demand.pending_verifications == 5
    assert 2000 / 240 <= demand.deadline_tokens_per_s <= 2000 / 239
    assert demand.inflow_tokens_per_s == 0.0  # the bucket being filled is not counted yet
    raw = await redis_client.hgetall(control.keys.inflight)
    (entry,) = [json.loads(v) for v in raw.values()]
    assert entry["tree_id"] == "tree-1" and entry["tokens"] == 2112


async def test_disabled_admission_only_registers(redis_client: Redis) -> None:
    control = AdmissionController(
        redis_client, AdmissionSettings(enabled=False, default_max_tokens_in_flight=300)
    )
    admissions = [await control.admit("acme", f"t{i}", Effort.HIGH, cost_of) for i in range(3)]
    assert all(a.effort == Effort.HIGH for a in admissions)
    assert (await control.demand()).active_trees == 3
