"""The Responses API in the gateway: `POST /v1/responses` and retrieve, cancel and delete.

Every response is a job (cluster/store/jobs.py) that the job runner deployment runs; this
part of the gateway validates the request, starts the tree and the job, and then only reads
the job store: it answers a plain request when the job's last event arrives, streams the
job's events, or, in background mode, answers `queued` at once. A client that leaves a plain
or streamed (not background) request cancels its job. Jobs are scoped to the caller's tenant.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray.serve.handle import DeploymentHandle

from autoscale.admission import Admission
from autoscale.ratelimit import RateLimiter
from cluster.api import ApiError, ProblemRequest
from cluster.auth import Caller
from cluster.config import ClusterConfig
from cluster.responses import (
    ResponseCreateRequest,
    ResponseShape,
    deleted_object,
    is_final_event,
    parse_response_request,
    response_object,
    sse_event,
    tree_id_of,
)
from cluster.store.jobs import JobRecord, JobStore
from cluster.types import Effort, SolveRequest
from deployments.errors import GeneratorWatch
from deployments.intake import Prepared, tree_id_for
from deployments.jobs import ResponseJob, fail_if_orphaned
from deployments.solving import DEADLINE_GRACE_S

# A stream waits this long for new events before it looks at the job record again.
JOB_POLL_MS = 1000
# How long a cancel waits for the job to stop before it answers with the job as it stands.
CANCEL_WAIT_S = 15.0
# A waiting caller gives the job runner this long beyond its own limit to report the end.
RUNNER_MARGIN_S = 10.0

router = APIRouter()


class ResponsesApi:
    """Routes of the Responses API and the job plumbing gRPC shares; mixed into the Gateway.

    The annotations below are what the Gateway provides.
    """

    _config: ClusterConfig
    _jobs: JobStore
    _runner: DeploymentHandle
    _caller: Callable[[Request], Caller]
    _read_body: Callable[[Request], Awaitable[bytes]]
    _check_model: Callable[[str], None]
    _effort: Callable[[Effort | None, Caller], Effort]
    _prepare: Callable[[ProblemRequest], Awaitable[Prepared]]
    _solve_request: Callable[[ProblemRequest, Effort, Caller, str, Prepared, float], SolveRequest]
    _admit: Callable[[ProblemRequest, SolveRequest, Effort, Caller], Awaitable[Admission | None]]
    _start_tree: Callable[[SolveRequest, Effort, Admission | None, str | None], Awaitable[None]]
    _admission_release: Callable[[Admission], Awaitable[None]]
    _limiter: RateLimiter
    _generators: GeneratorWatch

    @router.post("/v1/responses")
    async def create_response(self, request: Request) -> Response:
        caller = self._caller(request)
        await self._limiter.take(caller.tenant, "requests")
        body = parse_response_request(await self._read_body(request))
        self._check_model(body.model)
        record = await self._open_job(body, caller, request.headers.get("x-request-id"))
        if body.stream:
            # A background stream outlives its connection; a plain one is cancelled with it.
            return _sse(self._job_stream(record.job_id, -1, cancel_on_exit=not body.background))
        if body.background:
            return JSONResponse(record.response)
        return JSONResponse(await self._finished(record))

    @router.get("/v1/responses/{response_id}")
    async def retrieve_response(
        self, response_id: str, request: Request, stream: bool = False, starting_after: int = -1
    ) -> Response:
        record = await self._owned_job(response_id, self._caller(request))
        if stream:
            return _sse(self._job_stream(record.job_id, starting_after, cancel_on_exit=False))
        return JSONResponse(record.response)

    @router.post("/v1/responses/{response_id}/cancel")
    async def cancel_response(self, response_id: str, request: Request) -> JSONResponse:
        record = await self._owned_job(response_id, self._caller(request))
        return JSONResponse(await self._cancel_job(record))

    @router.delete("/v1/responses/{response_id}")
    async def delete_response(self, response_id: str, request: Request) -> JSONResponse:
        record = await self._owned_job(response_id, self._caller(request))
        # A running job stops once its record is gone (the runner reads that as a cancel).
        await self._jobs.delete(record.job_id)
        return JSONResponse(deleted_object(response_id))

    # ---- jobs (shared with gRPC) ---------------------------------------------------------

    async def _open_job(
        self, body: ResponseCreateRequest, caller: Caller, request_id: str | None
    ) -> JobRecord:
        """Validate, admit, create the tree and the job, hand it to the runner; the job as stored.

        A request id that names a job of the same tenant with the same content returns that
        job (a safe retry); any other reuse is a 409.
        """
        # The deadline runs from now: time queued for admission is part of it.
        arrived = time.time()
        effort = self._effort(body.reasoning_effort, caller)
        tree_id = tree_id_for(request_id, caller)
        existing = await self._jobs.get(tree_id)
        if existing is not None:
            return _retried(existing, body, caller)
        prepared = await self._prepare(body)
        solve = self._solve_request(body, effort, caller, tree_id, prepared, arrived)
        await self._generators.require()
        async with AsyncExitStack() as held:
            admission = await self._admit(body, solve, effort, caller)
            if admission is not None:
                held.push_async_callback(self._admission_release, admission)
                if admission.degraded:
                    effort = admission.effort
                    solve = self._solve_request(body, effort, caller, tree_id, prepared, arrived)
            shape = ResponseShape(
                tree_id=tree_id,
                model=body.model,
                effort=effort,
                summary=body.summary_detail,
                background=body.background,
                instructions=body.instructions,
                max_output_tokens=body.max_output_tokens,
                metadata=body.metadata or {},
            )
            created = await self._jobs.create(
                tree_id,
                caller.tenant,
                background=body.background,
                digest=body.digest(),
                response=response_object(shape, "queued"),
                shape=shape.to_dict(),
                ttl_s=self._config.redis.active_tree_ttl_s,
            )
            if not created:  # another replica took the id a moment ago
                raced = await self._jobs.get(tree_id)
                if raced is None:
                    raise ApiError(409, f"response {tree_id!r} was just deleted; send a new X-Request-Id")
                return _retried(raced, body, caller)
            # The job as created (queued): what a background request answers at once.
            record = await self._jobs.get(tree_id)
            try:
                await self._start_tree(solve, effort, admission, None)
                await self._runner.submit.remote(
                    ResponseJob(solve, shape, admission.entry_id if admission is not None else None)
                )
            except BaseException:
                await asyncio.shield(self._jobs.delete(tree_id))
                raise
            # From here on the runner holds the admission and gives it back when the job ends.
            held.pop_all()
        if record is None:
            raise ApiError(404, f"response {shape.response_id!r} was deleted", type="not_found_error")
        return record

    async def _owned_job(self, response_id: str, caller: Caller) -> JobRecord:
        job_id = tree_id_of(response_id)
        record = await self._jobs.get(job_id) if job_id is not None else None
        if record is None or not caller.may_read(record.owner):
            raise ApiError(
                404, f"no response {response_id!r} (it may have expired)", type="not_found_error", param="id"
            )
        if await fail_if_orphaned(self._jobs, record):
            return await self._owned_job(response_id, caller)
        return record

    async def _finished(self, record: JobRecord) -> dict[str, Any]:
        """The job's final Response object; a caller that leaves first cancels the job."""
        if record.final:
            return record.response
        budget = self._config.budget_for(Effort(record.shape["effort"]))
        try:
            limit_s = budget.deadline_s + DEADLINE_GRACE_S + RUNNER_MARGIN_S
            final = await self._final_response(record.job_id, limit_s)
        except asyncio.CancelledError:
            await asyncio.shield(self._jobs.request_cancel(record.job_id))
            raise
        if final is None:
            raise ApiError(
                504,
                f"response {record.response['id']!r} is still running; poll GET /v1/responses/{{id}}",
                type="timeout_error",
            )
        return final

    async def _cancel_job(self, record: JobRecord) -> dict[str, Any]:
        """Stop the job's search (its reserved budget is released) and answer the job as it ends."""
        if record.final:
            return record.response
        await self._jobs.request_cancel(record.job_id)
        final = await self._final_response(record.job_id, CANCEL_WAIT_S)
        if final is not None:
            return final
        current = await self._jobs.get(record.job_id)
        return current.response if current is not None else record.response

    async def _final_response(self, job_id: str, timeout_s: float) -> dict[str, Any] | None:
        """The Response object of the job's last event; None if it does not come within timeout_s."""
        try:
            async with asyncio.timeout(timeout_s):
                async for event in self._job_events(job_id, -1):
                    if is_final_event(event):
                        response: dict[str, Any] = event["response"]
                        return response
        except TimeoutError:
            return None
        record = await self._jobs.get(job_id)
        return record.response if record is not None and record.final else None

    async def _job_events(self, job_id: str, after: int) -> AsyncIterator[dict[str, Any]]:
        """The job's events after sequence number `after`, as they come, until its last one.

        The runner appends a job's last events before it stores its final status, so once the
        record is final every event is in the stream.
        """
        while True:
            events = await self._jobs.read_events(job_id, after, block_ms=JOB_POLL_MS)
            for event in events:
                after = int(event["sequence_number"])
                yield event
                if is_final_event(event):
                    return
            if events:
                continue
            record = await self._jobs.get(job_id)
            if record is None:
                raise ApiError(404, f"response for tree {job_id!r} was deleted", type="not_found_error")
            if record.final:
                for event in await self._jobs.read_events(job_id, after):
                    yield event
                return
            # A job whose runner died gets its last events here; the next read returns them.
            await fail_if_orphaned(self._jobs, record)

    async def _job_stream(self, job_id: str, after: int, cancel_on_exit: bool) -> AsyncIterator[bytes]:
        ended = False
        try:
            async for event in self._job_events(job_id, after):
                yield sse_event(event)
            ended = True
        except ApiError as exc:
            # The status line is long gone: the error travels as the stream's `error` event.
            ended = True
            error = {"code": exc.code or exc.type, "message": exc.message, "param": exc.param}
            yield sse_event({"type": "error", "sequence_number": after + 1, **error})
        finally:
            if cancel_on_exit and not ended:
                await asyncio.shield(self._jobs.request_cancel(job_id))


def _retried(existing: JobRecord, body: ResponseCreateRequest, caller: Caller) -> JobRecord:
    if existing.owner != caller.tenant or existing.digest != body.digest():
        raise ApiError(
            409,
            f"X-Request-Id {existing.job_id!r} was used for another request; send a new one",
            param="x-request-id",
        )
    return existing


def _sse(content: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(content, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
