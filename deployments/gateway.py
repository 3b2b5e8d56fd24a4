"""The gateway: Serve ingress speaking OpenAI-compatible HTTP.

It authenticates, validates, maps `reasoning_effort` to a budget, creates the tree and
grants its budget in Redis, hands the problem to a planner and shapes the answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from autoscale.admission import Admission, AdmissionController, AdmissionRejected, EffortCost
from autoscale.ratelimit import RateLimited, RateLimiter
from cluster.api import (
    ApiError,
    BudgetView,
    ChatCompletionRequest,
    ErrorType,
    ProblemRequest,
    chat_completion_body,
    parse_chat_request,
)
from cluster.audit import AuditAction, AuditLog, AuditOutcome
from cluster.auth import Caller, authenticate, cache_salt
from cluster.config import ClusterConfig
from cluster.engine.tokenizer import load_tokenizer
from cluster.prompts import PromptBuilder
from cluster.store import TOKENS, VERIFIER_CALLS, BudgetLedger, KeySpace, TreeExistsError, TreeMeta, TreeStore
from cluster.store.jobs import JobStore
from cluster.store.responses import ResponseStore
from cluster.store.tree_index import TreeIndex
from cluster.streaming import SSE_DONE, ChunkStream, sse
from cluster.tasks import InvalidProblem, pose
from cluster.tracing import Tracer, current_ids
from cluster.types import ChatMessage, Effort, SolveRequest, SolveResult
from deployments.errors import GeneratorWatch, api_error, internal_error
from deployments.explorer import list_trees, mount_ui
from deployments.intake import (
    Prepared,
    PromptGuard,
    Ticket,
    read_body,
    readable_ids,
    stream_position,
    ticket_for,
)
from deployments.recovery import REDIS_DOWN, Recovery
from deployments.responses import router as responses_router
from deployments.rpc import ReasoningRpc
from deployments.solving import DEADLINE_GRACE_S, solve_on_planner
from monitoring.metrics import GatewayMetrics, RedisMetrics, RequestTracker, instrumented_redis

logger = logging.getLogger(__name__)

DEFAULT_MODEL_ALIAS = "default"
# A stream waits this long for new progress events before it checks on the search again.
EVENT_POLL_MS = 250
# Events after which the planner returns at once: the stream waits for its result instead.
FINAL_EVENTS = frozenset({"done", "failed"})
# /healthz: each part's probe may take this long, and one probe's result serves every
# health request for this long, so a flood of health checks costs one probe a second.
HEALTH_TIMEOUT_S = 2.0
HEALTH_CACHE_S = 1.0
# A retry of a request whose tree ended waits this long for the first answer to be saved.
SAVE_GRACE_S = 5.0
RETRY_POLL_S = 0.25
# Redis down or the planner's queue full: retry soon, the condition is usually brief.
UNAVAILABLE_RETRY_AFTER_S = 2
# Meta extra of a tree made for a client's X-Request-Id: the SHA-256 of the request's body.
REQUEST_FINGERPRINT = "request_sha256"

# No schema or docs routes: the API is documented in the README, and the schema is produced
# in-process where it is needed (tests/e2e/test_security.py).
app = FastAPI(title="reasoning-cluster", docs_url=None, redoc_url=None, openapi_url=None)
app.include_router(responses_router)
mount_ui(app)


@app.exception_handler(ApiError)
async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


@app.exception_handler(AdmissionRejected)
async def _admission_rejected(_: Request, exc: AdmissionRejected) -> JSONResponse:
    body = ApiError(429, exc.message, type="rate_limit_error", code="reasoning_budget_exceeded").body()
    return JSONResponse(body, status_code=429, headers={"Retry-After": str(exc.retry_after_s)})


@app.exception_handler(RateLimited)
async def _rate_limited(_: Request, exc: RateLimited) -> JSONResponse:
    body = ApiError(429, exc.message, type="rate_limit_error", code="rate_limit_exceeded").body()
    return JSONResponse(body, status_code=429, headers={"Retry-After": str(exc.retry_after_s)})


@app.exception_handler(RedisConnectionError)
@app.exception_handler(RedisTimeoutError)
async def _redis_down(_: Request, exc: Exception) -> JSONResponse:
    logger.warning("Redis unavailable: %s", type(exc).__name__)
    return _unavailable("the service's store (Redis) is not answering; retry shortly")


@app.exception_handler(BackPressureError)
async def _back_pressure(_: Request, exc: BackPressureError) -> JSONResponse:
    return _unavailable("the service is at capacity; retry shortly")


@app.exception_handler(Exception)
async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    # Logged with its traceback for operators; the client gets no detail of the inside.
    logger.error("unhandled %s in the gateway", type(exc).__name__, exc_info=exc)
    return JSONResponse(internal_error().body(), status_code=500)


def _unavailable(message: str) -> JSONResponse:
    body = ApiError(503, message, type="server_error", code="service_unavailable").body()
    return JSONResponse(body, status_code=503, headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)})


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
def _no_tree(tree_id: str) -> ApiError:
    # One answer for "never existed", "expired", "not yours" and "not an id at all".
    shown = tree_id if len(tree_id) <= 64 else tree_id[:64] + "..."
    return ApiError(404, f"no tree {shown!r} (it may have expired)", type="not_found_error")


def _answer_chunks(chunks: ChunkStream, completion: Mapping[str, Any]) -> list[bytes]:
    """The answer, finish and final chunks of a stream, from the completion's body."""
    choice = completion["choices"][0]
    return [
        sse(chunks.content(choice["message"]["content"])),
        sse(chunks.finish(choice["finish_reason"])),
        sse(chunks.final(completion["usage"], completion["reasoning"])),
        SSE_DONE,
    ]


def _outcome_response(outcome: Mapping[str, Any]) -> JSONResponse:
    """A saved outcome (cluster.store.responses) as the response it was first."""
    if "completion" in outcome:
        return JSONResponse(outcome["completion"])
    return JSONResponse(outcome["error"], status_code=int(outcome["status"]))


async def _check(awaitable: Any, timeout_s: float = HEALTH_TIMEOUT_S) -> dict[str, Any]:
    try:
        detail = await asyncio.wait_for(awaitable, timeout_s)
    except Exception as exc:  # a health probe reports every failure instead of raising it
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:300]}
    return detail if isinstance(detail, dict) else {"status": "ok"}


def _admission_note(admission: Admission | None) -> dict[str, object] | None:
    return admission.to_dict() if admission is not None else None


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
class Gateway(ReasoningRpc):
    def __init__(
        self,
        config: ClusterConfig,
        planner: DeploymentHandle,
        generator: DeploymentHandle,
        verifier: DeploymentHandle,
        runner: DeploymentHandle,
    ) -> None:
        self._config = config
        self._planner = planner
        self._runner = runner
        self._workers = {
            "planner": planner,
            "branch_generator": generator,
            "verifier": verifier,
            "job_runner": runner,
        }
        # Metrics are exported through Ray's metrics agent (monitoring.metrics).
        self._metrics = GatewayMetrics(
            statuses={
                AdmissionRejected: 429,
                RateLimited: 429,
                BackPressureError: 503,
                RedisConnectionError: 503,
                RedisTimeoutError: 503,
            }
        )
        self._redis_metrics = RedisMetrics("gateway", self._metrics.metrics)
        self._redis: Redis = instrumented_redis(config.redis, self._redis_metrics)
        keys = KeySpace(config.redis.key_prefix)
        self._store = TreeStore(self._redis, keys)
        self._ledger = BudgetLedger(self._redis, keys)
        self._responses = ResponseStore(self._redis, keys)
        self._audit = AuditLog(self._redis, config.redis.key_prefix, config.redis.audit_maxlen)
        self._limiter = RateLimiter(self._redis, config.admission.rate_limits, config.redis.key_prefix)
        tokenizer = load_tokenizer(config.model)
        self._prompts = PromptBuilder(tokenizer)
        self._generators = GeneratorWatch(generator.app_name, generator.deployment_name)
        self._prompt_guard = PromptGuard(tokenizer, config.model.max_model_len)
        # Rendering and tokenising a long prompt takes long enough (seconds) to stall every
        # other request on the event loop: it runs here instead, one at a time (the tokenizer
        # is not safe to share between threads), with at most max_prompts_waiting in line.
        self._prompt_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prompt")
        self._prompts_waiting = 0
        # Polls of /events that may wait for new events; the rest answer at once.
        self._event_waiters = asyncio.Semaphore(config.http.max_event_waiters)
        self._recovery = Recovery(
            self._redis, self._store, self._ledger, config.redis.tree_ttl_s, config.redis.active_tree_ttl_s
        )
        self._health: asyncio.Task[tuple[bool, dict[str, Any]]] | None = None
        self._health_at = 0.0
        self._jobs = JobStore(self._redis, config.redis.key_prefix)
        # A tree lives at most its running TTL, then its finished TTL: so does its index entry.
        index_ttl_s = config.redis.active_tree_ttl_s + config.redis.tree_ttl_s
        self._tree_index = TreeIndex(self._redis, keys, index_ttl_s)
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
        # The deadline runs from now: time queued for admission is part of it.
        arrived = time.time()
        caller = self._caller(request)
        tracked.tenant = caller.tenant
        await self._limiter.take(caller.tenant, "requests")
        body = parse_chat_request(await self._read_body(request))
        self._check_model(body.model)
        effort = self._effort(body.reasoning_effort, caller)
        tracked.effort = effort.value
        ticket = ticket_for(request.headers.get("x-request-id"), caller, body)
        if ticket.request_id is not None and (meta := await self._store.get_meta(ticket.tree_id)):
            return await self._replay(meta, ticket, body)
        prepared = await self._prepare(body)
        solve = self._solve_request(body, effort, caller, ticket.tree_id, prepared, arrived)
        tracked.problem = solve.problem
        await self._generators.require()
        try:
            return await self._answer(body, ticket, solve, effort, caller, prepared, tracked, arrived)
        except TreeExistsError:
            # A retry with the same X-Request-Id started the tree first: answer as its retry.
            meta = await self._store.get_meta(ticket.tree_id)
            if meta is None:
                message = "a request with this X-Request-Id ended just now; send it again"
                raise ApiError(409, message, param="x-request-id", code="request_id_reused") from None
            return await self._replay(meta, ticket, body)

    async def _answer(
        self,
        body: ChatCompletionRequest,
        ticket: Ticket,
        solve: SolveRequest,
        effort: Effort,
        caller: Caller,
        prepared: Prepared,
        tracked: RequestTracker,
        arrived: float,
    ) -> Response:
        admission = await self._admit(body, solve, effort, caller)
        # Everything the request holds, released on every exit path (a stream takes it over).
        async with AsyncExitStack() as held:
            if admission is not None:
                held.push_async_callback(self._admission_release, admission)
                if admission.degraded:
                    effort = admission.effort
                    solve = self._solve_request(body, effort, caller, ticket.tree_id, prepared, arrived)
                    tracked.effort = effort.value
            fingerprint = ticket.fingerprint if ticket.request_id is not None else None
            await self._start_tree(solve, effort, admission, fingerprint)
            if body.stream:
                return await self._stream(body, solve, effort, admission, tracked, held)
            with self._metrics.in_flight(effort, solve.max_reasoning_tokens):
                outcome = await self._completion(solve, effort, body.model, admission, tracked)
        return _outcome_response(outcome)

    async def _prepare(self, body: ProblemRequest) -> Prepared:
        """Check, render and count the prompt in the prompt worker, off the event loop."""
        messages = body.chat_messages()
        self._prompt_guard.check(messages)
        if self._prompts_waiting >= self._config.http.max_prompts_waiting:
            raise ApiError(
                503,
                "the gateway is busy preparing other prompts; retry shortly",
                type="server_error",
                code="service_unavailable",
            )
        self._prompts_waiting += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._prompt_worker, self._render, messages, body.task)
        finally:
            self._prompts_waiting -= 1

    def _render(self, messages: tuple[ChatMessage, ...], task: str) -> Prepared:
        try:
            problem = pose(messages, task)
        except InvalidProblem as exc:
            raise ApiError(400, str(exc), param="messages") from exc
        prompt = self._prompts.render(problem)
        return Prepared(problem, prompt, self._prompts.count_tokens(prompt))

    async def _stream(
        self,
        body: ChatCompletionRequest,
        solve: SolveRequest,
        effort: Effort,
        admission: Admission | None,
        tracked: RequestTracker,
        held: AsyncExitStack,
    ) -> Response:
        """Stream the search of a started tree. Errors until here are answered as JSON with a status."""
        held.enter_context(self._metrics.in_flight(effort, solve.max_reasoning_tokens))
        search = asyncio.create_task(self._completion(solve, effort, body.model, admission, tracked))
        # A stream that ends early (the client left) cancels the search, and with it the planner.
        held.callback(search.cancel)
        chunks = ChunkStream(solve.tree_id, body.model)
        return _EventStream(self._stream_chunks(chunks, search), held.pop_all())

    async def _completion(
        self,
        solve: SolveRequest,
        effort: Effort,
        model: str,
        admission: Admission | None,
        tracked: RequestTracker,
    ) -> dict[str, Any]:
        """Search, then the completion's body as an outcome: kept for retries, then answered."""
        result = await self._search(solve, effort)
        budget = await self._budget(solve.tree_id)
        self._metrics.answered(tracked, result, budget.granted_tokens, budget.spent_tokens)
        completion = chat_completion_body(result, model, effort, budget, _admission_note(admission))
        outcome = {"completion": completion}
        await self._save_outcome(solve.tree_id, outcome)
        return outcome

    async def _stream_chunks(
        self, chunks: ChunkStream, outcome: asyncio.Task[dict[str, Any]]
    ) -> AsyncIterator[bytes]:
        """Progress while `outcome` runs, then its answer (or its error, as an event)."""
        yield sse(chunks.role())
        try:
            async for kind, data in self._progress(chunks.tree_id, outcome):
                yield sse(chunks.progress(kind, data))
            ended = await outcome
        except Exception as exc:
            # The status line is long gone: the error travels as an event of the stream.
            yield sse(api_error(exc, chunks.tree_id).body())
            yield SSE_DONE
            return
        if "completion" not in ended:
            yield sse(ended["error"])  # the saved error of the request a retry repeats
            yield SSE_DONE
            return
        for chunk in _answer_chunks(chunks, ended["completion"]):
            yield chunk

    async def _progress(
        self, tree_id: str, search: asyncio.Task[Any]
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

    async def _save_outcome(self, tree_id: str, outcome: Mapping[str, Any]) -> None:
        try:
            await self._responses.save(tree_id, outcome)
        except REDIS_DOWN:
            # The answer still goes out; only a retry of this request id cannot repeat it.
            logger.warning("could not keep the answer of tree %s for retries", tree_id)

    # ---- retries of an X-Request-Id ---------------------------------------------------

    async def _replay(self, meta: TreeMeta, ticket: Ticket, body: ChatCompletionRequest) -> Response:
        """A retry of a request id this tenant used before: the first request's answer, no new search.

        While the first request still runs, the retry waits for its answer (a stream shows the
        tree's progress meanwhile). The same id with a different body is a 409.
        """
        if meta.extra.get(REQUEST_FINGERPRINT) != ticket.fingerprint:
            raise ApiError(
                409,
                f"X-Request-Id {ticket.request_id!r} was used for a different request; send a new one",
                param="x-request-id",
                code="request_id_reused",
            )
        if not body.stream:
            return _outcome_response(await self._outcome(meta, ticket))
        outcome = asyncio.create_task(self._outcome(meta, ticket))
        held = AsyncExitStack()
        held.callback(outcome.cancel)
        return _EventStream(self._stream_chunks(ChunkStream(meta.tree_id, body.model), outcome), held)

    async def _outcome(self, meta: TreeMeta, ticket: Ticket) -> dict[str, Any]:
        """The saved outcome of a tree's first request, waiting while its search runs."""
        deadline = self._config.budget_for(Effort(meta.effort)).deadline_s
        give_up = meta.created_at + deadline + DEADLINE_GRACE_S
        ended_at: float | None = None
        while (saved := await self._responses.load(meta.tree_id)) is None:
            now = time.time()
            current = await self._store.get_meta(meta.tree_id)
            status = current.status if current is not None else "expired"
            if status != "running":
                # The first request saves its answer right after the tree ends: give it a moment.
                ended_at = ended_at or now
                if now - ended_at >= SAVE_GRACE_S:
                    raise ApiError(
                        409,
                        f"the request with X-Request-Id {ticket.request_id!r} ended ({status}) without "
                        "an answer to repeat; send a new X-Request-Id to ask again",
                        param="x-request-id",
                        code="request_id_reused",
                    )
            elif now > give_up:
                raise ApiError(504, f"no answer within the {meta.effort} deadline", type="timeout_error")
            await asyncio.sleep(RETRY_POLL_S)
        return saved

    # ---- trees, progress and health ---------------------------------------------------

    @app.get("/v1/trees")
    async def trees(self, request: Request) -> dict[str, Any]:
        return await list_trees(self._tree_index, self._store, self._caller(request), request.query_params)

    @app.get("/v1/trees/{tree_id}")
    async def tree(self, tree_id: str, request: Request) -> JSONResponse:
        caller = self._caller(request)
        await self._limiter.take(caller.tenant, "reads")
        meta = await self._readable_meta(caller, tree_id, "read_tree")
        # The owner was checked on the meta: a tree is only loaded for a caller who may read it.
        tree = await self._store.get_tree(meta.tree_id)
        if tree is None:
            raise _no_tree(tree_id)
        # to_dict is JSON-ready: FastAPI's own encoding pass would take longer than the read.
        return JSONResponse(tree.to_dict())

    @app.get("/v1/trees/{tree_id}/events")
    async def events(self, tree_id: str, request: Request, after: str = "0") -> dict[str, Any]:
        caller = self._caller(request)
        await self._limiter.take(caller.tenant, "reads")
        position = stream_position(after)
        # A follow is audited at its first poll; every refused poll is audited.
        meta = await self._readable_meta(caller, tree_id, "follow_events", audit_granted=position == "0")
        events = await self._poll_events(meta, position)
        return {"status": meta.status, "events": [{"id": i, **event} for i, event in events]}

    async def _poll_events(self, meta: TreeMeta, after: str) -> list[tuple[str, dict[str, Any]]]:
        """New events of the tree; waits briefly for some while it runs, if a waiter slot is free."""
        wait_ms = self._config.http.events_wait_ms
        if meta.status != "running" or wait_ms == 0 or self._event_waiters.locked():
            return await self._store.read_events(meta.tree_id, after_id=after)
        async with self._event_waiters:
            return await self._store.read_events(meta.tree_id, after_id=after, block_ms=wait_ms)

    async def _readable_meta(
        self, caller: Caller, tree_id: str, action: AuditAction, audit_granted: bool = True
    ) -> TreeMeta:
        """The meta of the tree `tree_id` names for this caller, or the same 404 for every miss.

        Someone else's tree, an expired one, one that never was and an id that is not one at
        all are answered alike, so a caller learns nothing about ids it does not own.
        """
        for candidate in readable_ids(tree_id, caller):
            meta = await self._store.get_meta(candidate)
            if meta is None:
                continue
            allowed = caller.may_read(meta.owner)
            if audit_granted or not allowed:
                outcome: AuditOutcome = "granted" if allowed else "denied"
                await self._audit.record(caller.tenant, action, meta.tree_id, meta.owner, outcome)
            if allowed:
                return meta
        raise _no_tree(tree_id)

    @app.get("/healthz")
    async def healthz(self, request: Request) -> JSONResponse:
        healthy, checks = await self._health_checks()
        body: dict[str, Any] = {"status": "ok" if healthy else "degraded"}
        # Which parts are down, with replica ids and error text, is for operators only.
        if self._shows_health_details(request):
            body["checks"] = checks
        return JSONResponse(body, status_code=200 if healthy else 503)

    async def _health_checks(self) -> tuple[bool, dict[str, Any]]:
        """One probe of every part at a time, its result reused for HEALTH_CACHE_S."""
        loop = asyncio.get_running_loop()
        stale = loop.time() - self._health_at > HEALTH_CACHE_S
        if self._health is None or (self._health.done() and stale):
            self._health = asyncio.create_task(self._probe_health())
            self._health_at = loop.time()
        return await asyncio.shield(self._health)

    async def _probe_health(self) -> tuple[bool, dict[str, Any]]:
        probes: dict[str, Any] = {"redis": self._redis.ping()}
        probes |= {name: handle.health.remote() for name, handle in self._workers.items()}
        results = await asyncio.gather(*(_check(probe) for probe in probes.values()))
        checks = dict(zip(probes, results, strict=True))
        return all(c["status"] == "ok" for c in checks.values()), checks

    def _shows_health_details(self, request: Request) -> bool:
        auth = self._config.auth
        if auth.is_open:
            # An open service on loopback is its operator's own machine.
            return self._config.http.is_loopback()
        try:
            return self._caller(request).is_ops
        except ApiError:
            return False

    # ---- helpers ------------------------------------------------------------------------

    def _caller(self, request: Request) -> Caller:
        return authenticate(request.headers.get("authorization"), self._config.auth)

    async def _read_body(self, request: Request) -> bytes:
        """The body, read with a cap (a 413 before more than the limit is buffered)."""
        return await read_body(request, self._config.http.max_request_bytes)

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

    def _effort(self, requested: Effort | None, caller: Caller) -> Effort:
        effort = requested or self._config.default_effort
        ceiling = caller.max_effort
        if effort.rank > ceiling.rank:
            raise ApiError(
                403,
                f"reasoning_effort {effort.value!r} is above tenant {caller.tenant!r}'s "
                f"ceiling {ceiling.value!r}",
                type="permission_error",
                param="reasoning_effort",
            )
        return effort

    def _solve_request(
        self,
        body: ProblemRequest,
        effort: Effort,
        caller: Caller,
        tree_id: str,
        prepared: Prepared,
        arrived: float,
    ) -> SolveRequest:
        budget = self._config.budget_for(effort)
        cap = body.completion_cap()
        max_tokens = min(budget.max_reasoning_tokens, cap) if cap is not None else budget.max_reasoning_tokens
        room = self._config.model.max_model_len - min(budget.max_tokens_per_branch, max_tokens)
        if prepared.prompt_tokens > room:
            raise ApiError(
                400,
                f"the prompt is {prepared.prompt_tokens} tokens; at effort {effort.value!r} at most "
                f"{room} fit the model's {self._config.model.max_model_len}-token context",
                param="messages",
                code="context_length_exceeded",
            )
        return SolveRequest(
            tree_id=tree_id,
            tenant=caller.tenant,
            effort=effort,
            problem=prepared.problem,
            prompt=prepared.prompt,
            max_reasoning_tokens=max_tokens,
            deadline_at=arrived + budget.deadline_s,
            cache_salt=cache_salt(caller.tenant),
            seed=body.seed,
            strategy=body.strategy,
        )

    async def _admit(
        self, body: ProblemRequest, solve: SolveRequest, effort: Effort, caller: Caller
    ) -> Admission | None:
        if self._admission is None:
            return None

        def cost_of(level: Effort) -> EffortCost:
            budget = self._config.budget_for(level)
            tokens = solve.max_reasoning_tokens if level == effort else self._tokens_for(body, level)
            return EffortCost(tokens, budget.max_verifier_calls, budget.deadline_s)

        return await self._admission.admit(caller.tenant, solve.tree_id, effort, cost_of)

    def _tokens_for(self, body: ProblemRequest, effort: Effort) -> int:
        budget = self._config.budget_for(effort)
        cap = body.completion_cap()
        return min(budget.max_reasoning_tokens, cap) if cap is not None else budget.max_reasoning_tokens

    async def _admission_release(self, admission: Admission) -> None:
        assert self._admission is not None
        try:
            # Shielded: a request cancelled because its client left still gives its admission back.
            await asyncio.shield(self._admission.release(admission))
        except REDIS_DOWN:
            # Never mask the answer: the release is retried once Redis answers again.
            self._recovery.release_admission(self._admission, admission)
        except Exception:  # the entry expires after its deadline; never mask the answer
            logger.exception("could not release admission %s", admission.entry_id)

    async def _start_tree(
        self, solve: SolveRequest, effort: Effort, admission: Admission | None, fingerprint: str | None
    ) -> None:
        """Create the tree and grant its budget, in one atomic step: all a planner needs.

        Raises TreeExistsError when a request with the same X-Request-Id created it first.
        """
        budget = self._config.budget_for(effort)
        now = time.time()
        # What a retry with the same X-Request-Id must match to get this tree's answer.
        notes = {REQUEST_FINGERPRINT: fingerprint} if fingerprint is not None else {}
        if admission is not None and (admission.degraded or admission.queued_s > 0):
            notes |= {
                "requested_effort": admission.requested_effort.value,
                "admission": admission.reason,
                "queued_s": str(round(admission.queued_s, 3)),
            }
        meta = TreeMeta(
            tree_id=solve.tree_id,
            owner=solve.tenant,
            effort=effort.value,
            strategy=solve.strategy or budget.strategy,
            created_at=now,
            updated_at=now,
            model=self._config.model.name,
            question=solve.problem.question,
            extra=notes,
        )
        grants = {TOKENS: solve.max_reasoning_tokens, VERIFIER_CALLS: budget.max_verifier_calls}
        await self._store.create_tree(meta, self._config.redis.active_tree_ttl_s, grants)
        await self._tree_index.add(meta, solve.problem.task)

    async def _search(self, solve: SolveRequest, effort: Effort) -> SolveResult:
        """Run the search of a started tree on a planner; failures become ApiErrors, kept for retries."""
        attributes = {"rc.effort": effort.value}
        with self._tracer.span("gateway.search", tree_id=solve.tree_id, attributes=attributes):
            if self._tracer.enabled:
                # The explorer links the tree to its trace.
                await self._store.set_meta_fields(solve.tree_id, trace_id=current_ids()["trace_id"])
            try:
                return await solve_on_planner(self._planner, self._tracer.propagate(solve))
            except ApiError as exc:
                # A planner that stopped without ending its tree (Redis was away) leaves it to us.
                self._recovery.end_abandoned_tree(solve.tree_id, exc.message)
                await self._save_outcome(solve.tree_id, {"error": exc.body(), "status": exc.status})
                raise
