"""The job runner: runs Responses API jobs detached from the connection that asked for them.

The gateway validates a request, creates its tree and its job record in Redis and hands the
job here; `submit` returns as soon as the job runs. The runner calls the planner (resuming
the tree if a planner replica dies), turns the tree's progress into summary parts, and writes
every stream event and the final Response object to the job store. Nothing of a job lives in
the gateway replica that accepted it: that replica may restart, and its client may leave,
while the search goes on. A cancel request (a flag in the job record, set by any gateway
replica) stops the search; the planner then releases the budget the tree still reserved.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle
from redis.asyncio import Redis

from autoscale.admission import AdmissionController
from cluster.api import ApiError, BudgetView
from cluster.config import ClusterConfig
from cluster.responses import (
    Outcome,
    ResponseEvents,
    ResponseShape,
    final_parts,
    outcome_of,
    path_steps,
    progress_part,
    summary_texts,
)
from cluster.store import TOKENS, BudgetLedger, KeySpace, TreeStore
from cluster.store.jobs import JobNotFoundError, JobRecord, JobStore
from cluster.types import SolveRequest, SolveResult
from deployments.solving import solve_on_planner
from monitoring.metrics import GatewayMetrics, RedisMetrics, RequestTracker, instrumented_redis

logger = logging.getLogger(__name__)

# How long the runner waits for new tree events before it checks for a cancel request again.
POLL_MS = 250
# How long a cancelled job waits for the planner to stop its search before it reports.
STOP_WAIT_S = 10
# A runner replica renews its heartbeat this often; a job whose runner's heartbeat is this old
# died with its runner.
HEARTBEAT_EVERY_S = 5
HEARTBEAT_TTL_S = 20


@dataclass(frozen=True, slots=True)
class ResponseJob:
    """Gateway -> runner: the started tree's search and how to report it."""

    solve: SolveRequest
    shape: ResponseShape
    # The admission entry the job holds until it ends (None without admission control).
    admission_entry: str | None = None

    @property
    def job_id(self) -> str:
        return self.solve.tree_id


class _Cancelled(Exception):
    """The job was cancelled by a client (or deleted) while it ran."""


@serve.deployment
class JobRunner:
    def __init__(self, config: ClusterConfig, planner: DeploymentHandle) -> None:
        if config.redis.url is None:
            raise ValueError("redis.url must be set before deploying the job runner (or set REDIS_URL)")
        self._config = config
        self._planner = planner
        self._metrics = GatewayMetrics()
        self._redis_metrics = RedisMetrics("job_runner", self._metrics.metrics)
        self._redis: Redis = instrumented_redis(config.redis, self._redis_metrics)
        keys = KeySpace(config.redis.key_prefix)
        self._trees = TreeStore(self._redis, keys)
        self._ledger = BudgetLedger(self._redis, keys)
        self._jobs = JobStore(self._redis, config.redis.key_prefix)
        self._admission: AdmissionController | None = None
        if config.admission.enabled or config.autoscaling.enabled:
            self._admission = AdmissionController(
                self._redis, config.admission, config.redis.key_prefix, config.autoscaling.min_slack_s
            )
        self._running: dict[str, asyncio.Task[None]] = {}
        self._replica = serve.get_replica_context().replica_id.unique_id
        self._heartbeat: asyncio.Task[None] | None = None

    async def submit(self, job: ResponseJob) -> None:
        """Start the job and return at once; it runs on in this replica."""
        await self._jobs.beat(self._replica, HEARTBEAT_TTL_S)
        if self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())
        await self._jobs.claim(job.job_id, self._replica)
        task = asyncio.get_running_loop().create_task(self._run(job))
        self._running[job.job_id] = task
        task.add_done_callback(lambda _: self._running.pop(job.job_id, None))

    async def check_health(self) -> None:
        await self._redis_metrics.probe(self._redis)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY_S)
            try:
                await self._jobs.beat(self._replica, HEARTBEAT_TTL_S)
            except Exception:  # Redis away for a moment: the next beat may reach it
                logger.warning("job runner %s could not renew its heartbeat", self._replica, exc_info=True)

    async def health(self) -> dict[str, Any]:
        await self._redis.ping()
        return {"status": "ok", "jobs_running": len(self._running)}

    async def _run(self, job: ResponseJob) -> None:
        events = ResponseEvents(job.shape)
        tracker = RequestTracker()
        tracker.effort, tracker.tenant = job.solve.effort.value, job.solve.tenant
        try:
            with self._metrics.in_flight(job.solve.effort, job.solve.max_reasoning_tokens):
                await self._emit(job, events.started(), events.response("in_progress"))
                outcome = await self._search(job, events, tracker)
            final = events.finished(outcome)
            # Events first: a stored final status then means every event is in the stream.
            await self._emit(job, final)
            await self._jobs.save_response(job.job_id, final[-1]["response"])
            await self._jobs.expire(job.job_id, self._config.redis.tree_ttl_s)
        except JobNotFoundError:
            logger.info("response job %s was deleted while it ran", job.job_id)
        except Exception:
            logger.exception("response job %s could not be recorded", job.job_id)
        finally:
            if self._admission is not None and job.admission_entry is not None:
                await asyncio.shield(self._admission.release(job.admission_entry))

    async def _search(self, job: ResponseJob, events: ResponseEvents, tracker: RequestTracker) -> Outcome:
        """Run the search, following its progress; how it ended, as a response reports it."""
        search = asyncio.create_task(solve_on_planner(self._planner, job.solve))
        try:
            await self._follow(job, events, search)
            result = await search
        except _Cancelled:
            await self._stopped(job.job_id)
            return Outcome("cancelled")
        except ApiError as exc:
            if exc.type == "timeout_error":
                return Outcome("incomplete", incomplete_reason="deadline", error=exc)
            return Outcome("failed", error=exc)
        finally:
            search.cancel()
        ledger = await self._ledger.snapshot(job.job_id)
        view = BudgetView(ledger.granted.get(TOKENS, 0), ledger.spent.get(TOKENS, 0))
        self._metrics.answered(tracker, result, view.granted_tokens, view.spent_tokens)
        steps, reason = await self._winning_steps(result)
        for part in final_parts(job.shape.summary, result, steps, reason):
            await self._emit(job, events.summary_part(part))
        return outcome_of(result, view)

    async def _follow(
        self, job: ResponseJob, events: ResponseEvents, search: asyncio.Task[SolveResult]
    ) -> None:
        """Until the search ends: a summary part each time its best path changes; stop on cancel."""
        after = "0"
        best: list[Any] | None = None
        while not search.done():
            if await self._jobs.cancel_requested(job.job_id):
                search.cancel()
                await asyncio.wait({search})
                raise _Cancelled
            tree_events = await self._trees.read_events(job.job_id, after_id=after, block_ms=POLL_MS)
            for event_id, event in tree_events:
                after = event_id
                path = event["data"].get("best_path")
                if event["kind"] != "progress" or not path or path == best:
                    continue
                best = path
                part = progress_part(job.shape.summary, event["data"])
                if part is not None:
                    await self._emit(job, events.summary_part(part), events.response("in_progress"))

    async def _stopped(self, tree_id: str) -> None:
        """Wait (briefly) for the planner to stop the cancelled search: its tree leaves `running`
        once the planner has released what the tree reserved, so `cancelled` means just that."""
        for _ in range(STOP_WAIT_S * 1000 // POLL_MS):
            meta = await self._trees.get_meta(tree_id)
            if meta is None or meta.status != "running":
                return
            await asyncio.sleep(POLL_MS / 1000)
        logger.warning("tree %s was still running %d s after its cancel", tree_id, STOP_WAIT_S)

    async def _emit(
        self, job: ResponseJob, batch: Sequence[Mapping[str, Any]], response: Mapping[str, Any] | None = None
    ) -> None:
        """Store the Response object as it now stands (if given), then append the events."""
        if response is not None:
            await self._jobs.save_response(job.job_id, response)
        for event in batch:
            await self._jobs.append_event(job.job_id, event)

    async def _winning_steps(self, result: SolveResult) -> tuple[list[str], str | None]:
        tree = await self._trees.get_tree(result.tree_id)
        if tree is None:
            return [], None
        nodes = {node.node_id: node for node in tree.nodes}
        texts = [nodes[i].text for i in result.winning_path if i in nodes and nodes[i].depth > 0]
        return path_steps(texts), tree.meta.extra.get("reason")


async def fail_if_orphaned(jobs: JobStore, record: JobRecord) -> bool:
    """End a job whose runner replica died with it: `failed`, with its last events. True if so.

    Only a job that has not ended and whose runner's heartbeat expired qualifies; of readers
    that find it at once, one writes.
    """
    if record.final or record.runner is None or await jobs.runner_alive(record.runner):
        return False
    shape = ResponseShape.from_dict(record.shape)
    last = await jobs.last_sequence(record.job_id)
    events = ResponseEvents(shape, sequence=last + 1)
    events.parts = summary_texts(record.response)
    stopped = ApiError(
        500,
        f"the job runner running this response stopped; tree {shape.tree_id} holds what was done; "
        "send the request again",
        type="server_error",
    )
    final = events.finished(Outcome("failed", error=stopped))
    # Nothing is written if the job ended or got another event since it was read.
    return await jobs.end(record.job_id, last, final, final[-1]["response"])
