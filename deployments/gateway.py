"""The gateway: Serve ingress speaking OpenAI-compatible HTTP.

It authenticates, validates, maps `reasoning_effort` to a budget, creates the tree and
grants its budget in Redis, hands the problem to a planner and shapes the answer.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle
from redis.asyncio import Redis
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from autoscale.admission import Admission, AdmissionController, AdmissionRejected, EffortCost
from cluster.api import (
    ApiError,
    BudgetView,
    ChatCompletionRequest,
    ErrorType,
    chat_completion_body,
    parse_chat_request,
    reasoning_body,
    usage_body,
)
from cluster.auth import Caller, authenticate
from cluster.config import ClusterConfig
from cluster.engine.tokenizer import load_tokenizer
from cluster.prompts import InvalidProblem, PromptBuilder, build_problem
from cluster.search.context import TOKENS, VERIFIER_CALLS
from cluster.search.controller import DeadlineExceeded
from cluster.store import BudgetLedger, KeySpace, TreeExistsError, TreeMeta, TreeStore
from cluster.store.tree_index import TreeIndex
from cluster.streaming import SSE_DONE, ChunkStream, sse
from cluster.tracing import Tracer, current_ids
from cluster.types import Effort, SolveRequest, SolveResult
from deployments.explorer import list_trees, mount_ui
from monitoring.metrics import GatewayMetrics, RedisMetrics, RequestTracker, instrumented_redis

logger = logging.getLogger(__name__)

DEFAULT_MODEL_ALIAS = "default"
_TREE_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
# How often one request resumes its tree after its planner replica died.
PLANNER_RESUMES = 2
# Time the gateway waits beyond the effort's deadline for the planner to wrap up.
DEADLINE_GRACE_S = 30.0
# A stream waits this long for new progress events before it checks on the search again.
EVENT_POLL_MS = 250
# Events after which the planner returns at once: the stream waits for its result instead.
FINAL_EVENTS = frozenset({"done", "failed"})

app = FastAPI(title="reasoning-cluster", docs_url=None, redoc_url=None)
mount_ui(app)


@app.exception_handler(ApiError)
async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


@app.exception_handler(AdmissionRejected)
async def _admission_rejected(_: Request, exc: AdmissionRejected) -> JSONResponse:
    body = ApiError(429, exc.message, type="rate_limit_error", code="reasoning_budget_exceeded").body()
    return JSONResponse(body, status_code=429, headers={"Retry-After": str(exc.retry_after_s)})


@app.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    kind: ErrorType = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return JSONResponse(
        ApiError(exc.status_code, str(exc.detail), type=kind).body(), status_code=exc.status_code
    )


@app.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse(ApiError(400, str(exc.errors()[0].get("msg"))).body(), status_code=400)


# Helpers stand above the deployment class: Serve pickles the class when it is decorated,
# before anything below it in this module exists.
def _tree_id(request_id: str | None) -> str:
    if request_id is None:
        return uuid.uuid4().hex
    if not _TREE_ID.match(request_id):
        raise ApiError(400, "X-Request-Id must be 8-64 letters, digits, '-' or '_'", param="x-request-id")
    return request_id


async def _check(awaitable: Any, timeout_s: float = 5.0) -> dict[str, Any]:
    try:
        detail = await asyncio.wait_for(awaitable, timeout_s)
    except Exception as exc:  # a health probe reports every failure instead of raising it
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:300]}
    return detail if isinstance(detail, dict) else {"status": "ok"}


def _admission_note(admission: Admission | None) -> dict[str, object] | None:
    return admission.to_dict() if admission is not None else None


def _stream_error(exc: Exception, tree_id: str) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    logger.exception("stream of tree %s failed", tree_id)
    return ApiError(
        500,
        f"the stream failed: {type(exc).__name__}; tree {tree_id} holds what was done",
        type="server_error",
    )


class _EventStream(StreamingResponse):
    """Server-Sent Events that hold `held` (search, admission, gauges) until the stream ends.

    The stream ends when the last event is sent, or when Serve cancels the request because
    the client went away; either way `held` is closed, which cancels a search still running.
    """

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes], held: AsyncExitStack) -> None:
        super().__init__(content, headers={"Cache-Control": "no-cache"})
        self._held = held

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with self._held:
            await super().__call__(scope, receive, send)


@serve.deployment
@serve.ingress(app)
class Gateway:
    def __init__(
        self,
        config: ClusterConfig,
        planner: DeploymentHandle,
        generator: DeploymentHandle,
        verifier: DeploymentHandle,
    ) -> None:
        if config.redis.url is None:
            raise ValueError("redis.url must be set before deploying the gateway (or set REDIS_URL)")
        self._config = config
        self._planner = planner
        self._workers = {"planner": planner, "branch_generator": generator, "verifier": verifier}
        # Metrics are exported through Ray's metrics agent (monitoring.metrics).
        self._metrics = GatewayMetrics(statuses={AdmissionRejected: 429})
        self._redis_metrics = RedisMetrics("gateway", self._metrics.metrics)
        self._redis: Redis = instrumented_redis(config.redis.url, self._redis_metrics)
        keys = KeySpace(config.redis.key_prefix)
        self._store = TreeStore(self._redis, keys)
        self._ledger = BudgetLedger(self._redis, keys)
        # A tree lives at most its running TTL, then its finished TTL: so does its index entry.
        index_ttl_s = config.redis.active_tree_ttl_s + config.redis.tree_ttl_s
        self._tree_index = TreeIndex(self._redis, keys, index_ttl_s)
        self._prompts = PromptBuilder(load_tokenizer(config.model))
        self._tracer = Tracer(config.tracing, "gateway")
        # The in-flight registry feeds both admission control and the autoscalers' demand.
        self._admission: AdmissionController | None = None
        if config.admission.enabled or config.autoscaling.enabled:
            self._admission = AdmissionController(
                self._redis, config.admission, config.redis.key_prefix, config.autoscaling.min_slack_s
            )

    async def check_health(self) -> None:
        # Serve's periodic health check; it only publishes rc_redis_up (an unreachable Redis
        # shows in /healthz and the metric, it does not restart the gateway).
        await self._redis_metrics.probe(self._redis)

    # ---- OpenAI-compatible API -------------------------------------------------------

    @app.get("/v1/models")
    async def models(self, request: Request) -> dict[str, Any]:
        self._caller(request)
        created = int(time.time())
        names = [DEFAULT_MODEL_ALIAS, self._config.model.name]
        return {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "object": "model",
                    "created": created,
                    "owned_by": "reasoning-cluster",
                    "root": self._config.model.name,
                }
                for name in names
            ],
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        with self._metrics.request() as tracked:
            return await self._chat_completions(request, tracked)

    async def _chat_completions(self, request: Request, tracked: RequestTracker) -> Response:
        caller = self._caller(request)
        tracked.tenant = caller.tenant
        raw = await request.body()
        if len(raw) > self._config.http.max_request_bytes:
            raise ApiError(
                413,
                f"request body is {len(raw)} bytes; the limit is {self._config.http.max_request_bytes}",
                code="request_too_large",
            )
        body = parse_chat_request(raw)
        self._check_model(body.model)
        effort = self._effort(body, caller)
        tracked.effort = effort.value
        request_id = request.headers.get("x-request-id")
        solve = self._solve_request(body, effort, caller, request_id)
        tracked.problem = solve.problem
        admission = await self._admit(body, solve, effort, caller, request_id)
        # Everything the request holds, released on every exit path (a stream takes it over).
        async with AsyncExitStack() as held:
            if admission is not None:
                held.push_async_callback(self._admission_release, admission)
                if admission.degraded:
                    effort = admission.effort
                    solve = self._solve_request(body, effort, caller, solve.tree_id)
                    tracked.effort = effort.value
            if body.stream:
                return await self._stream(body, solve, effort, admission, tracked, held)
            with self._metrics.in_flight(effort, solve.max_reasoning_tokens):
                result = await self._run(solve, effort, admission)
            budget = await self._budget(solve.tree_id)
        self._metrics.answered(tracked, result, budget.granted_tokens, budget.spent_tokens)
        completion = chat_completion_body(result, body.model, effort, budget, _admission_note(admission))
        return JSONResponse(completion)

    async def _stream(
        self,
        body: ChatCompletionRequest,
        solve: SolveRequest,
        effort: Effort,
        admission: Admission | None,
        tracked: RequestTracker,
        held: AsyncExitStack,
    ) -> Response:
        """Start the search and stream it. Errors until here are answered as JSON with a status."""
        await self._start_tree(solve, effort, admission)
        held.enter_context(self._metrics.in_flight(effort, solve.max_reasoning_tokens))
        search = asyncio.create_task(self._search(solve, effort))
        # A stream that ends early (the client left) cancels the search, and with it the planner.
        held.callback(search.cancel)
        chunks = ChunkStream(solve.tree_id, body.model)
        content = self._stream_chunks(chunks, search, effort, admission, tracked)
        return _EventStream(content, held.pop_all())

    async def _stream_chunks(
        self,
        chunks: ChunkStream,
        search: asyncio.Task[SolveResult],
        effort: Effort,
        admission: Admission | None,
        tracked: RequestTracker,
    ) -> AsyncIterator[bytes]:
        yield sse(chunks.role())
        try:
            async for kind, data in self._progress(chunks.tree_id, search):
                yield sse(chunks.progress(kind, data))
            result = await search
            budget = await self._budget(chunks.tree_id)
        except Exception as exc:
            # The status line is long gone: the error travels as an event of the stream.
            yield sse(_stream_error(exc, chunks.tree_id).body())
            yield SSE_DONE
            return
        self._metrics.answered(tracked, result, budget.granted_tokens, budget.spent_tokens)
        reasoning = reasoning_body(result, effort, budget, _admission_note(admission))
        yield sse(chunks.content(result.content))
        yield sse(chunks.finish(result.finish_reason))
        yield sse(chunks.final(usage_body(result.usage), reasoning))
        yield SSE_DONE

    async def _progress(
        self, tree_id: str, search: asyncio.Task[SolveResult]
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """The tree's events (kind, data) as they come, until the search ended and all are read."""
        after = "0"
        while True:
            ended = search.done()
            block_ms = None if ended else EVENT_POLL_MS
            events = await self._store.read_events(tree_id, after_id=after, block_ms=block_ms)
            for event_id, event in events:
                after = event_id
                yield event["kind"], event["data"]
            if ended and not events:
                return
            if any(event["kind"] in FINAL_EVENTS for _, event in events):
                # The planner returns right after its last event: wait for that, not for a poll.
                await asyncio.wait({search}, timeout=EVENT_POLL_MS / 1000)

    async def _budget(self, tree_id: str) -> BudgetView:
        snapshot = await self._ledger.snapshot(tree_id)
        return BudgetView(snapshot.granted.get(TOKENS, 0), snapshot.spent.get(TOKENS, 0))

    # ---- trees, progress and health ---------------------------------------------------

    @app.get("/v1/trees")
    async def trees(self, request: Request) -> dict[str, Any]:
        return await list_trees(self._tree_index, self._store, self._caller(request), request.query_params)

    @app.get("/v1/trees/{tree_id}")
    async def tree(self, tree_id: str, request: Request) -> JSONResponse:
        caller = self._caller(request)
        tree = await self._store.get_tree(tree_id)
        if tree is None or not caller.may_read(tree.meta.owner):
            raise ApiError(404, f"no tree {tree_id!r} (it may have expired)", type="not_found_error")
        # to_dict is JSON-ready: FastAPI's own encoding pass would take longer than the read.
        return JSONResponse(tree.to_dict())

    @app.get("/v1/trees/{tree_id}/events")
    async def events(self, tree_id: str, request: Request, after: str = "0") -> dict[str, Any]:
        caller = self._caller(request)
        meta = await self._store.get_meta(tree_id)
        if meta is None or not caller.may_read(meta.owner):
            raise ApiError(404, f"no tree {tree_id!r}", type="not_found_error")
        events = await self._store.read_events(tree_id, after_id=after, block_ms=1000)
        return {"status": meta.status, "events": [{"id": i, **event} for i, event in events]}

    @app.get("/healthz")
    async def healthz(self) -> JSONResponse:
        checks: dict[str, Any] = {"redis": await _check(self._redis.ping())}
        for name, handle in self._workers.items():
            checks[name] = await _check(handle.health.remote())
        healthy = all(c["status"] == "ok" for c in checks.values())
        return JSONResponse(
            {"status": "ok" if healthy else "degraded", "checks": checks}, status_code=200 if healthy else 503
        )

    # ---- helpers ------------------------------------------------------------------------

    def _caller(self, request: Request) -> Caller:
        return authenticate(request.headers.get("authorization"), self._config.auth)

    def _check_model(self, model: str) -> None:
        if model not in (DEFAULT_MODEL_ALIAS, self._config.model.name):
            raise ApiError(
                404,
                f"model {model!r} is not served; use 'default' or "
                f"{self._config.model.name!r} (GET /v1/models)",
                type="not_found_error",
                param="model",
                code="model_not_found",
            )

    def _effort(self, body: ChatCompletionRequest, caller: Caller) -> Effort:
        effort = body.reasoning_effort or self._config.default_effort
        ceiling = caller.max_effort
        order = list(Effort)
        if order.index(effort) > order.index(ceiling):
            raise ApiError(
                403,
                f"reasoning_effort {effort.value!r} is above tenant {caller.tenant!r}'s "
                f"ceiling {ceiling.value!r}",
                type="permission_error",
                param="reasoning_effort",
            )
        return effort

    def _solve_request(
        self, body: ChatCompletionRequest, effort: Effort, caller: Caller, request_id: str | None
    ) -> SolveRequest:
        try:
            problem = build_problem(body.chat_messages(), body.task)
        except InvalidProblem as exc:
            raise ApiError(400, str(exc), param="messages") from exc
        budget = self._config.budget_for(effort)
        cap = body.completion_cap()
        max_tokens = min(budget.max_reasoning_tokens, cap) if cap is not None else budget.max_reasoning_tokens
        prompt = self._prompts.render(problem)
        prompt_tokens = self._prompts.count_tokens(prompt)
        room = self._config.model.max_model_len - min(budget.max_tokens_per_branch, max_tokens)
        if prompt_tokens > room:
            raise ApiError(
                400,
                f"the prompt is {prompt_tokens} tokens; at effort {effort.value!r} at most "
                f"{room} fit the model's {self._config.model.max_model_len}-token context",
                param="messages",
                code="context_length_exceeded",
            )
        return SolveRequest(
            tree_id=_tree_id(request_id),
            tenant=caller.tenant,
            effort=effort,
            problem=problem,
            prompt=prompt,
            max_reasoning_tokens=max_tokens,
            seed=body.seed,
            strategy=body.strategy,
        )

    async def _admit(
        self,
        body: ChatCompletionRequest,
        solve: SolveRequest,
        effort: Effort,
        caller: Caller,
        request_id: str | None,
    ) -> Admission | None:
        if self._admission is None:
            return None

        def cost_of(level: Effort) -> EffortCost:
            budget = self._config.budget_for(level)
            tokens = solve.max_reasoning_tokens if level == effort else self._tokens_for(body, level)
            return EffortCost(tokens, budget.max_verifier_calls, budget.deadline_s)

        return await self._admission.admit(caller.tenant, solve.tree_id, effort, cost_of)

    def _tokens_for(self, body: ChatCompletionRequest, effort: Effort) -> int:
        budget = self._config.budget_for(effort)
        cap = body.completion_cap()
        return min(budget.max_reasoning_tokens, cap) if cap is not None else budget.max_reasoning_tokens

    async def _admission_release(self, admission: Admission) -> None:
        assert self._admission is not None
        try:
            # Shielded: a request cancelled because its client left still gives its admission back.
            await asyncio.shield(self._admission.release(admission))
        except Exception:  # the entry expires after its deadline; never mask the answer
            logger.exception("could not release admission %s", admission.entry_id)

    async def _run(
        self, solve: SolveRequest, effort: Effort, admission: Admission | None = None
    ) -> SolveResult:
        await self._start_tree(solve, effort, admission)
        return await self._search(solve, effort)

    async def _start_tree(self, solve: SolveRequest, effort: Effort, admission: Admission | None) -> None:
        """Create the tree and grant its budget: all a planner needs to start the search."""
        budget = self._config.budget_for(effort)
        now = time.time()
        meta = TreeMeta(
            tree_id=solve.tree_id,
            owner=solve.tenant,
            effort=effort.value,
            strategy=solve.strategy or budget.strategy,
            created_at=now,
            updated_at=now,
            model=self._config.model.name,
            question=solve.problem.question,
        )
        try:
            await self._store.create_tree(meta, self._config.redis.active_tree_ttl_s)
        except TreeExistsError as exc:
            raise ApiError(
                409, f"a tree with id {solve.tree_id!r} exists; send a new X-Request-Id", param="x-request-id"
            ) from exc
        await self._tree_index.add(meta, solve.problem.task.value)
        if admission is not None and (admission.degraded or admission.queued_s > 0):
            await self._store.set_meta_fields(
                solve.tree_id,
                requested_effort=admission.requested_effort.value,
                admission=admission.reason,
                queued_s=round(admission.queued_s, 3),
            )
        await self._ledger.grant(
            solve.tree_id, {TOKENS: solve.max_reasoning_tokens, VERIFIER_CALLS: budget.max_verifier_calls}
        )

    async def _search(self, solve: SolveRequest, effort: Effort) -> SolveResult:
        """Run the search of a started tree on a planner; failures become ApiErrors."""
        attributes = {"rc.effort": effort.value}
        with self._tracer.span("gateway.search", tree_id=solve.tree_id, attributes=attributes):
            if self._tracer.enabled:
                # The explorer links the tree to its trace.
                await self._store.set_meta_fields(solve.tree_id, trace_id=current_ids()["trace_id"])
            return await self._search_on_planner(self._tracer.propagate(solve), effort)

    async def _search_on_planner(self, solve: SolveRequest, effort: Effort) -> SolveResult:
        budget = self._config.budget_for(effort)
        try:
            return await asyncio.wait_for(self._call_planner(solve), budget.deadline_s + DEADLINE_GRACE_S)
        except DeadlineExceeded as exc:
            raise ApiError(504, f"{exc}; try a lower reasoning_effort", type="timeout_error") from exc
        except TimeoutError as exc:
            raise ApiError(
                504, f"no answer within the {effort.value} deadline", type="timeout_error"
            ) from exc
        except Exception as exc:
            logger.exception("tree %s failed", solve.tree_id)
            raise ApiError(
                500,
                f"the search failed: {type(exc).__name__}; tree {solve.tree_id} holds what was done",
                type="server_error",
            ) from exc

    async def _call_planner(self, solve: SolveRequest) -> SolveResult:
        """Run the search on a planner; if the planner dies, resume the tree on another."""
        for attempt in range(PLANNER_RESUMES + 1):
            response = self._planner.solve.remote(solve if attempt == 0 else replace(solve, resume=True))
            try:
                return await response
            except asyncio.CancelledError:
                # Awaiting a DeploymentResponse does not cancel the call. Cancelling it cancels the
                # planner's task: the tree is marked cancelled and its reservations are released.
                response.cancel()
                raise
            except RayActorError:
                if attempt == PLANNER_RESUMES:
                    raise
                # Serve replaces the dead replica; the tree in Redis holds what it had done.
                logger.warning("the planner of tree %s died; resuming the tree", solve.tree_id)
        raise AssertionError("unreachable: the last attempt returns or raises")
