"""BudgetLedger against a real redis-server, including spending from several OS processes."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from concurrent.futures import ProcessPoolExecutor

import pytest
from redis.asyncio import Redis

from cluster.store import BudgetLedger, TreeMeta, TreeNotFoundError, TreeStore

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

TOKENS = "tokens"


async def ledger_for(client: Redis, tree_id: str = "t1", **limits: int) -> BudgetLedger:
    await TreeStore(client).create_tree(TreeMeta(tree_id, "tenant-a", "high", "beam"), active_ttl_s=600)
    ledger = BudgetLedger(client)
    await ledger.grant(tree_id, limits)
    return ledger


async def test_reserve_settle_release_arithmetic(redis_client: Redis) -> None:
    ledger = await ledger_for(redis_client, tokens=100, verifier_calls=3)

    assert await ledger.reserve("t1", TOKENS, 30) == 30
    assert await ledger.reserve("t1", TOKENS, 80) == 70  # only what is left
    assert await ledger.reserve("t1", TOKENS, 5) == 0  # exhausted, never negative
    snap = await ledger.snapshot("t1")
    assert (snap.granted[TOKENS], snap.spent.get(TOKENS, 0), snap.reserved[TOKENS]) == (100, 0, 100)
    assert snap.remaining(TOKENS) == 0

    await ledger.settle("t1", TOKENS, reserved=30, used=20)
    snap = await ledger.snapshot("t1")
    assert (snap.spent[TOKENS], snap.reserved[TOKENS], snap.remaining(TOKENS)) == (20, 70, 10)

    await ledger.release("t1", TOKENS, 70)
    snap = await ledger.snapshot("t1")
    assert (snap.spent[TOKENS], snap.reserved[TOKENS], snap.remaining(TOKENS)) == (20, 0, 80)

    # Resources are independent, and one never granted has nothing to give.
    assert await ledger.reserve("t1", "verifier_calls", 5) == 3
    assert await ledger.reserve("t1", "judge_calls", 5) == 0
    assert await ledger.reserve("t1", TOKENS, 0) == 0
    assert (await ledger.snapshot("t1")).remaining("unknown") == 0

    with pytest.raises(ValueError):
        await ledger.reserve("t1", TOKENS, -1)
    with pytest.raises(ValueError):
        await ledger.grant("t1", {"bad:name": 1})


async def test_settle_rejects_overuse_before_touching_redis(redis_client: Redis) -> None:
    ledger = await ledger_for(redis_client, tokens=50)
    held = await ledger.reserve("t1", TOKENS, 10)
    before = await ledger.snapshot("t1")

    with pytest.raises(ValueError):
        await ledger.settle("t1", TOKENS, reserved=held, used=held + 1)
    assert await ledger.snapshot("t1") == before

    await ledger.settle("t1", TOKENS, reserved=held, used=4)
    # Settling the same reservation twice would free budget someone else holds.
    with pytest.raises(ValueError):
        await ledger.settle("t1", TOKENS, reserved=held, used=0)
    with pytest.raises(ValueError):
        await ledger.release("t1", TOKENS, held)
    snap = await ledger.snapshot("t1")
    assert (snap.spent[TOKENS], snap.reserved[TOKENS]) == (4, 0)


async def test_lowered_grant_never_goes_negative(redis_client: Redis) -> None:
    ledger = await ledger_for(redis_client, tokens=100)
    held = await ledger.reserve("t1", TOKENS, 60)
    await ledger.settle("t1", TOKENS, held, 60)
    await ledger.grant("t1", {TOKENS: 40})
    assert await ledger.reserve("t1", TOKENS, 10) == 0
    assert (await ledger.snapshot("t1")).remaining(TOKENS) == 0


async def test_reservation_settles_used_and_releases_rest(redis_client: Redis) -> None:
    ledger = await ledger_for(redis_client, tokens=100)
    async with ledger.reservation("t1", TOKENS, 40) as booking:
        assert booking.amount == 40
        assert (await ledger.snapshot("t1")).reserved[TOKENS] == 40
        booking.use(15)
        booking.use(10)
        assert booking.remaining == 15
        with pytest.raises(ValueError):
            booking.use(16)
    snap = await ledger.snapshot("t1")
    assert (snap.spent[TOKENS], snap.reserved[TOKENS]) == (25, 0)


async def test_reservation_released_on_exception(redis_client: Redis) -> None:
    ledger = await ledger_for(redis_client, tokens=100)
    with pytest.raises(RuntimeError):
        async with ledger.reservation("t1", TOKENS, 60) as booking:
            assert booking.amount == 60
            raise RuntimeError("engine died")
    snap = await ledger.snapshot("t1")
    assert (snap.spent.get(TOKENS, 0), snap.reserved[TOKENS]) == (0, 0)

    # What the block recorded as consumed before failing stays spent; the rest returns.
    with pytest.raises(RuntimeError):
        async with ledger.reservation("t1", TOKENS, 60) as booking:
            booking.use(7)
            raise RuntimeError("verifier died")
    snap = await ledger.snapshot("t1")
    assert (snap.spent[TOKENS], snap.reserved[TOKENS]) == (7, 0)


async def test_reservation_released_on_cancellation(redis_client: Redis) -> None:
    ledger = await ledger_for(redis_client, tokens=100)
    entered = asyncio.Event()

    async def hold_forever() -> None:
        async with ledger.reservation("t1", TOKENS, 50):
            entered.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(hold_forever())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await ledger.snapshot("t1")).reserved[TOKENS] == 0


async def test_exhausted_reservation_is_empty(redis_client: Redis) -> None:
    ledger = await ledger_for(redis_client, tokens=0)
    async with ledger.reservation("t1", TOKENS, 10) as booking:
        assert booking.amount == 0
        with pytest.raises(ValueError):
            booking.use(1)
    assert (await ledger.snapshot("t1")).reserved.get(TOKENS, 0) == 0


async def test_missing_tree(redis_client: Redis) -> None:
    ledger = BudgetLedger(redis_client)
    with pytest.raises(TreeNotFoundError):
        await ledger.grant("gone", {TOKENS: 10})
    with pytest.raises(TreeNotFoundError):
        await ledger.reserve("gone", TOKENS, 10)
    with pytest.raises(TreeNotFoundError):
        await ledger.settle("gone", TOKENS, 10, 5)
    await ledger.release("gone", TOKENS, 10)  # nothing left to return it to
    assert await redis_client.exists(TreeStore(redis_client).keys("gone").budget) == 0


async def test_budget_key_inherits_tree_ttl(redis_client: Redis) -> None:
    await ledger_for(redis_client, tokens=10)
    ttl = await redis_client.ttl(TreeStore(redis_client).keys("t1").budget)
    assert 0 < ttl <= 600


# --- several OS processes spending one budget ---------------------------------------------

GRANTED = 20_000
WORKERS = 4


def spend_worker(url: str, tree_id: str, seed: int) -> int:
    """Runs in a spawned process: spend until the budget stays exhausted; return tokens used."""
    return asyncio.run(_spend(url, tree_id, seed))


async def _start_together(client: Redis, tree_id: str) -> None:
    # Spawned processes start at different times; without a barrier the first one could
    # drain the budget alone and the test would prove nothing about races.
    ready_key = f"test:{{{tree_id}}}:ready"
    await client.incr(ready_key)
    deadline = time.monotonic() + 60
    while int(await client.get(ready_key) or 0) < WORKERS:
        assert time.monotonic() < deadline, "not all workers started"
        await asyncio.sleep(0.01)


async def _spend(url: str, tree_id: str, seed: int) -> int:
    rng = random.Random(seed)
    client = Redis.from_url(url)
    ledger = BudgetLedger(client)
    used_total = 0
    idle = 0
    try:
        await _start_together(client, tree_id)
        while idle < 20:
            held = await ledger.reserve(tree_id, TOKENS, rng.randint(1, 60))
            if held == 0:
                idle += 1
                await asyncio.sleep(0.005)
                continue
            idle = 0
            used = rng.randint(0, held)
            if rng.random() < 0.15:
                await ledger.release(tree_id, TOKENS, held)
            elif rng.random() < 0.5:
                await ledger.settle(tree_id, TOKENS, held, used)
                used_total += used
            else:
                # Exercise the context manager's path too: return what was held, use some.
                await ledger.release(tree_id, TOKENS, held)
                async with ledger.reservation(tree_id, TOKENS, held) as booking:
                    booking.use(min(used, booking.amount))
                    used_total += booking.used
    finally:
        await client.aclose()
    return used_total


async def test_processes_never_overspend(redis_client: Redis, redis_server: str) -> None:
    ledger = await ledger_for(redis_client, "shared", tokens=GRANTED)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=WORKERS, mp_context=context) as pool:
        loop = asyncio.get_running_loop()
        futures = [
            loop.run_in_executor(pool, spend_worker, redis_server, "shared", seed) for seed in range(WORKERS)
        ]
        used_by_worker = await asyncio.wait_for(asyncio.gather(*futures), timeout=240)

    snap = await ledger.snapshot("shared")
    assert snap.reserved[TOKENS] == 0
    assert snap.spent[TOKENS] == sum(used_by_worker)
    assert snap.spent[TOKENS] <= GRANTED
    # The last worker to stop saw nothing left while nobody held a reservation.
    assert snap.spent[TOKENS] == GRANTED
    assert sum(1 for used in used_by_worker if used > 0) >= 2  # they really did race
