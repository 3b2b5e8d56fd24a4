"""How the gateway reads response jobs from a real Redis: streams that end at the last event,
resume after any sequence number and wait for events to come, final responses, cancel
requests, deleted jobs, and jobs whose runner died.

The test writes each job's events as the job runner does (ResponseEvents into the JobStore)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis

from cluster.api import ApiError, BudgetView
from cluster.responses import Outcome, ResponseEvents, ResponseShape, outcome_of, response_object
from cluster.store.jobs import JobStore
from cluster.types import Effort, SolveResult, Usage
from deployments.responses import ResponsesApi

pytestmark = pytest.mark.integration

RESULT = SolveResult(
    tree_id="job-read-1",
    answer="105",
    content="105",
    summary="Answer: 105 (the only chain).",
    strategy="single_chain",
    usage=Usage(prompt_tokens=30, completion_tokens=40, cached_tokens=0),
    branches=1,
    verifier_calls=1,
)
SHAPE = ResponseShape(
    tree_id="job-read-1", model="default", effort=Effort.LOW, summary="auto", background=True
)


async def _api(redis: Redis) -> ResponsesApi:
    api = ResponsesApi()
    api._jobs = JobStore(redis, "t")
    await api._jobs.create(
        SHAPE.tree_id,
        "acme",
        background=True,
        digest="d",
        response=response_object(SHAPE, "queued"),
        shape=SHAPE.to_dict(),
        ttl_s=60,
    )
    return api


async def _write(api: ResponsesApi, events: list[dict[str, Any]], response: dict[str, Any]) -> None:
    """As the runner writes: events first, then the response as it stands."""
    for event in events:
        await api._jobs.append_event(SHAPE.tree_id, event)
    await api._jobs.save_response(SHAPE.tree_id, response)


async def _collect(api: ResponsesApi, after: int = -1) -> list[dict[str, Any]]:
    return [event async for event in api._job_events(SHAPE.tree_id, after)]


async def test_a_stream_waits_for_events_and_ends_at_the_last(redis_client: Redis) -> None:
    api = await _api(redis_client)
    events = ResponseEvents(SHAPE)
    await _write(api, events.started(), events.response("in_progress"))
    reading = asyncio.create_task(_collect(api))
    await asyncio.sleep(0.3)
    assert not reading.done()  # the job has not ended: the stream waits
    await _write(api, events.summary_part("depth 1"), events.response("in_progress"))
    final = events.finished(outcome_of(RESULT, BudgetView(256, 40)))
    await _write(api, final, final[-1]["response"])
    streamed = await asyncio.wait_for(reading, 10)
    assert [e["sequence_number"] for e in streamed] == list(range(len(streamed)))
    assert streamed[-1]["type"] == "response.completed"
    # Resumed after any event: the rest, once; after the last: nothing, at once.
    assert await _collect(api, after=4) == streamed[5:]
    assert await asyncio.wait_for(_collect(api, after=len(streamed) - 1), 5) == []
    response = await api._final_response(SHAPE.tree_id, timeout_s=5)
    assert response == final[-1]["response"] and response["status"] == "completed"


async def test_waiting_for_a_running_job_times_out_and_cancel_asks_the_runner(redis_client: Redis) -> None:
    api = await _api(redis_client)
    events = ResponseEvents(SHAPE)
    await _write(api, events.started(), events.response("in_progress"))
    assert await api._final_response(SHAPE.tree_id, timeout_s=0.5) is None
    record = await api._jobs.get(SHAPE.tree_id)
    assert record is not None
    cancelling = asyncio.create_task(api._cancel_job(record))
    await asyncio.sleep(0.3)
    assert await api._jobs.cancel_requested(SHAPE.tree_id)
    # The runner stops the search and reports the job cancelled.
    final = events.finished(Outcome("cancelled"))
    await _write(api, final, final[-1]["response"])
    assert (await asyncio.wait_for(cancelling, 10))["status"] == "cancelled"


async def test_a_job_deleted_while_streaming_ends_the_stream_with_404(redis_client: Redis) -> None:
    api = await _api(redis_client)
    events = ResponseEvents(SHAPE)
    await _write(api, events.started(), events.response("in_progress"))
    reading = asyncio.create_task(_collect(api))
    await asyncio.sleep(0.3)
    await api._jobs.delete(SHAPE.tree_id)
    with pytest.raises(ApiError) as raised:
        await asyncio.wait_for(reading, 10)
    assert raised.value.status == 404


async def test_a_job_whose_runner_died_ends_failed_for_its_readers(redis_client: Redis) -> None:
    api = await _api(redis_client)
    events = ResponseEvents(SHAPE)
    await _write(api, events.started() + events.summary_part("depth 1"), events.response("in_progress"))
    await api._jobs.claim(SHAPE.tree_id, "runner-gone")  # no heartbeat: it is dead
    streamed = await asyncio.wait_for(_collect(api), 10)
    assert streamed[-1]["type"] == "response.failed"
    assert "job runner" in streamed[-1]["response"]["error"]["message"]
    assert [e["sequence_number"] for e in streamed] == list(range(len(streamed)))
    record = await api._jobs.get(SHAPE.tree_id)
    assert record is not None and record.status == "failed"


async def test_grpc_progress_is_the_trees_events_until_the_job_ends(redis_client: Redis) -> None:
    from cluster.store import KeySpace, TreeMeta, TreeStore
    from deployments.rpc import ReasoningRpc

    rpc = ReasoningRpc()
    rpc._jobs = JobStore(redis_client, "t")
    rpc._store = TreeStore(redis_client, KeySpace("t"))
    await rpc._jobs.create(
        SHAPE.tree_id,
        "acme",
        background=False,
        digest="d",
        response=response_object(SHAPE, "queued"),
        shape=SHAPE.to_dict(),
        ttl_s=60,
    )
    await rpc._store.create_tree(TreeMeta(SHAPE.tree_id, "acme", "low", "single_chain"), 60)
    await rpc._store.append_event(SHAPE.tree_id, "chains", {"count": 1, "tokens": 40})
    progress = asyncio.create_task(_kinds(rpc))
    await asyncio.sleep(0.5)
    assert not progress.done()  # the job runs: more may come
    await rpc._store.append_event(SHAPE.tree_id, "done", {"answer": "105"})
    events = ResponseEvents(SHAPE)
    final = events.started() + events.finished(outcome_of(RESULT, BudgetView(256, 40)))
    for event in final:
        await rpc._jobs.append_event(SHAPE.tree_id, event)
    await rpc._jobs.save_response(SHAPE.tree_id, final[-1]["response"])
    assert await asyncio.wait_for(progress, 10) == ["chains", "done"]


async def _kinds(rpc: Any) -> list[str]:
    return [kind async for kind, _ in rpc._tree_progress(SHAPE.tree_id)]
