"""Response jobs in a real Redis: one record per id, numbered events readable after any sequence
number, cancel requests, expiry and deletion."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from cluster.store.jobs import JobNotFoundError, JobStore

pytestmark = pytest.mark.integration


async def _create(store: JobStore, job_id: str = "job-0001", owner: str = "acme") -> bool:
    return await store.create(
        job_id,
        owner,
        background=True,
        digest="d1",
        response={"id": f"resp_{job_id}", "status": "queued"},
        shape={"effort": "low"},
        ttl_s=60,
    )


async def test_a_job_id_is_taken_once(redis_client: Redis) -> None:
    store = JobStore(redis_client, "t")
    assert await _create(store)
    assert not await _create(store, owner="other")
    record = await store.get("job-0001")
    assert record is not None
    assert (record.owner, record.status, record.background, record.digest) == ("acme", "queued", True, "d1")
    assert record.response == {"id": "resp_job-0001", "status": "queued"} and not record.final
    assert await store.get("job-0002") is None


async def test_events_resume_after_a_sequence_number(redis_client: Redis) -> None:
    store = JobStore(redis_client, "t")
    await _create(store)
    for n in range(5):
        await store.append_event("job-0001", {"type": "e", "sequence_number": n})
    assert [e["sequence_number"] for e in await store.read_events("job-0001")] == [0, 1, 2, 3, 4]
    assert [e["sequence_number"] for e in await store.read_events("job-0001", after_sequence=2)] == [3, 4]
    assert await store.read_events("job-0001", after_sequence=4) == []


async def test_a_blocked_reader_wakes_on_the_next_event(redis_client: Redis) -> None:
    store = JobStore(redis_client, "t")
    await _create(store)
    await store.append_event("job-0001", {"type": "e", "sequence_number": 0})
    waiting = asyncio.create_task(store.read_events("job-0001", after_sequence=0, block_ms=5000))
    await asyncio.sleep(0.1)
    await store.append_event("job-0001", {"type": "e", "sequence_number": 1})
    assert [e["sequence_number"] for e in await asyncio.wait_for(waiting, 5)] == [1]


async def test_status_cancel_and_deletion(redis_client: Redis) -> None:
    store = JobStore(redis_client, "t")
    await _create(store)
    assert not await store.cancel_requested("job-0001")
    assert await store.request_cancel("job-0001")
    assert await store.cancel_requested("job-0001")
    await store.save_response("job-0001", {"id": "resp_job-0001", "status": "cancelled"})
    record = await store.get("job-0001")
    assert record is not None and record.final and record.cancel_requested
    assert await store.delete("job-0001")
    # A deleted job reads as cancelled to its runner, and cannot be written to again.
    assert await store.cancel_requested("job-0001")
    assert not await store.request_cancel("job-0001")
    with pytest.raises(JobNotFoundError):
        await store.save_response("job-0001", {"status": "completed"})
    with pytest.raises(JobNotFoundError):
        await store.append_event("job-0001", {"type": "e", "sequence_number": 9})


async def test_events_expire_with_their_job(redis_client: Redis) -> None:
    store = JobStore(redis_client, "t")
    await _create(store)
    await store.append_event("job-0001", {"type": "e", "sequence_number": 0})
    assert 0 < await redis_client.pttl("t:resp:{job-0001}:events") <= 60_000
    await store.expire("job-0001", 1)
    await asyncio.sleep(1.2)
    assert await store.get("job-0001") is None and await store.read_events("job-0001") == []


async def test_a_job_whose_runner_died_ends_failed_once(redis_client: Redis) -> None:
    from cluster.responses import ResponseEvents, ResponseShape, response_object
    from cluster.types import Effort
    from deployments.jobs import fail_if_orphaned

    store = JobStore(redis_client, "t")
    shape = ResponseShape(
        tree_id="job-0001", model="default", effort=Effort.LOW, summary="auto", background=True
    )
    await store.create(
        "job-0001",
        "acme",
        background=True,
        digest="d1",
        response=response_object(shape, "queued"),
        shape=shape.to_dict(),
        ttl_s=60,
    )
    events = ResponseEvents(shape)
    for event in events.started() + events.summary_part("depth 1: explored 2"):
        await store.append_event("job-0001", event)
    await store.save_response("job-0001", events.response("in_progress"))
    await store.claim("job-0001", "runner-a")
    await store.beat("runner-a", 5)
    record = await store.get("job-0001")
    assert record is not None and record.runner == "runner-a"
    assert not await fail_if_orphaned(store, record)  # its runner is alive
    await redis_client.delete("t:resp-runner:runner-a")
    assert await fail_if_orphaned(store, record)
    assert not await fail_if_orphaned(store, record)  # the stale copy: its events are written
    ended = await store.get("job-0001")
    assert ended is not None and ended.status == "failed"
    assert "job runner" in ended.response["error"]["message"]
    assert ended.response["output"][0]["summary"] == [{"type": "summary_text", "text": "depth 1: explored 2"}]
    numbers = [e["sequence_number"] for e in await store.read_events("job-0001")]
    assert numbers == list(range(len(numbers))) and await store.last_sequence("job-0001") == numbers[-1]
