"""Prometheus metrics of every deployment, exported through Ray's metrics agent.

Each replica records with `ray.util.metrics`; Ray's per-node metrics agent serves all of them,
together with Ray Serve's own metrics (replicas, queues, ongoing requests), on one Prometheus
endpoint per node (`ray.init(_metrics_export_port=...)`, `http.metrics_port` in the config).
One scrape target per node therefore covers every deployment, every replica and Serve itself,
and a replica that moves or restarts needs no new target.

Ray's exporter prefixes every name with `ray_` and adds the labels `WorkerId`, `NodeAddress`,
`SessionName`, `Component` and `Version`: `rc_requests_total` below is scraped as
`ray_rc_requests_total`. `CATALOGUE` is the one list of what exists; the docs, dashboards and
alert tests are checked against it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter as Tally
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cluster.api import ApiError
from cluster.config import RedisConfig
from cluster.search.observer import SearchObserver
from cluster.store.connection import redis_client
from cluster.tasks import get_task
from cluster.types import Effort, GenerationResult, Problem, SolveRequest, SolveResult, VerifyResult

# Ray's exporter adds this to every name.
EXPORT_PREFIX = "ray_"
# Label value for a request that failed before its effort or tenant was known.
UNKNOWN = "unknown"

Kind = Literal["counter", "gauge", "histogram"]

_LATENCY_S = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 240, 480)
_REDIS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_ENGINE_S = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
_RATIO = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.25, 2.0)
_NODES = (1, 2, 3, 5, 9, 17, 33, 65, 129, 257)
_DEPTH = (1, 2, 3, 4, 6, 8, 12, 16)
ANSWER_LABELS = ("effort", "status", "verified", "correct")


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    kind: Kind
    description: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    # Which deployment records it.
    source: str = "gateway"

    @property
    def exported(self) -> str:
        """The name Prometheus sees (without `_bucket`/`_sum`/`_count` for histograms)."""
        return EXPORT_PREFIX + self.name


CATALOGUE: tuple[MetricSpec, ...] = (
    # ---- gateway: traffic, latency, tokens, budgets ------------------------------------
    MetricSpec(
        "rc_requests_total",
        "counter",
        "Chat-completion requests by effort, HTTP status and tenant.",
        ("effort", "status", "tenant"),
    ),
    MetricSpec(
        "rc_requests_in_flight", "gauge", "Requests being answered, per gateway replica.", ("effort",)
    ),
    MetricSpec(
        "rc_budget_in_flight_tokens",
        "gauge",
        "Reasoning-token budgets granted to requests still running (the demand), per gateway replica.",
        ("effort",),
    ),
    MetricSpec(
        "rc_time_to_answer_seconds",
        "histogram",
        "Time from receiving a request to its answer (successful requests).",
        ("effort",),
        _LATENCY_S,
    ),
    MetricSpec(
        "rc_reasoning_tokens_total",
        "counter",
        "Reasoning (completion) tokens of answered requests, from the engine's counts.",
        ("effort",),
    ),
    MetricSpec("rc_prompt_tokens_total", "counter", "Prompt tokens of answered requests.", ("effort",)),
    MetricSpec(
        "rc_cached_tokens_total",
        "counter",
        "Prompt tokens of answered requests served from the engine's prefix cache.",
        ("effort",),
    ),
    MetricSpec(
        "rc_budget_granted_tokens_total",
        "counter",
        "Reasoning-token budget granted to answered requests (the tree ledger's grant).",
        ("effort",),
    ),
    MetricSpec(
        "rc_budget_spent_tokens_total",
        "counter",
        "Reasoning tokens spent by answered requests (the tree ledger's spent).",
        ("effort",),
    ),
    MetricSpec(
        "rc_budget_spent_ratio",
        "histogram",
        "Spent / granted reasoning tokens per answered request; above 1.0 is an overspend.",
        ("effort",),
        _RATIO,
    ),
    # ---- gateway: reasoning quality -------------------------------------------------------
    MetricSpec(
        "rc_answers_total",
        "counter",
        "Answered requests by effort, status (complete; incomplete: the search stopped early on its "
        "budget, deadline or an error and answered with the best it had), verified (true: a "
        "verifier that proves answers accepted it; else false) and correct (true, "
        "false against an evaluation label: a Game of 24 puzzle, a reference answer; else unknown).",
        ANSWER_LABELS,
    ),
    MetricSpec(
        "rc_answer_reasoning_tokens_total",
        "counter",
        "Reasoning tokens of answered requests, with the labels of rc_answers_total "
        '(tokens per correct answer = this / rc_answers_total, both with correct="true").',
        ANSWER_LABELS,
    ),
    # ---- planner: the search ------------------------------------------------------------
    MetricSpec(
        "rc_time_to_first_progress_seconds",
        "histogram",
        "Time from the planner starting a search to the tree's first chains (first progress event).",
        ("effort",),
        _LATENCY_S,
        "planner",
    ),
    MetricSpec(
        "rc_searches_total",
        "counter",
        "Searches by effort, strategy and outcome (done, failed, deadline, cancelled).",
        ("effort", "strategy", "outcome"),
        source="planner",
    ),
    MetricSpec(
        "rc_branches_generated_total", "counter", "Chains grown by the engine.", ("effort",), source="planner"
    ),
    MetricSpec(
        "rc_branches_verified_total",
        "counter",
        "Chains scored by the verifiers.",
        ("effort",),
        source="planner",
    ),
    MetricSpec(
        "rc_branches_pruned_total",
        "counter",
        "Chains grown but not chosen when a search finished.",
        ("effort",),
        source="planner",
    ),
    MetricSpec(
        "rc_tree_nodes",
        "histogram",
        "Nodes per finished tree (root included).",
        ("effort",),
        _NODES,
        "planner",
    ),
    MetricSpec("rc_tree_depth", "histogram", "Depth of each finished tree.", ("effort",), _DEPTH, "planner"),
    # ---- verifier ---------------------------------------------------------------------------
    MetricSpec(
        "rc_verifier_verdicts_total",
        "counter",
        "Verdicts by verifier and outcome (pass, fail, abstain: the verifier could not judge).",
        ("verifier", "outcome"),
        source="verifier",
    ),
    # ---- branch-generator (engine) -----------------------------------------------------------
    MetricSpec(
        "rc_engine_requests_total",
        "counter",
        "Batched engine calls by outcome (ok, error).",
        ("outcome",),
        source="branch_generator",
    ),
    MetricSpec(
        "rc_engine_generated_tokens_total",
        "counter",
        "Tokens the engine generated (rate = engine throughput).",
        source="branch_generator",
    ),
    MetricSpec(
        "rc_engine_prompt_tokens_total",
        "counter",
        "Prompt tokens the engine processed.",
        source="branch_generator",
    ),
    MetricSpec(
        "rc_engine_cached_tokens_total",
        "counter",
        "Prompt tokens the engine served from its prefix cache.",
        source="branch_generator",
    ),
    MetricSpec(
        "rc_engine_ongoing_requests",
        "gauge",
        "Engine calls in progress per replica.",
        source="branch_generator",
    ),
    MetricSpec(
        "rc_engine_request_duration_seconds",
        "histogram",
        "Duration of one batched engine call.",
        (),
        _ENGINE_S,
        "branch_generator",
    ),
    # ---- Redis (gateway and planner) -------------------------------------------------------
    MetricSpec(
        "rc_redis_operation_duration_seconds",
        "histogram",
        "Redis command latency by deployment and command (EVALSHA: the Lua scripts).",
        ("deployment", "operation"),
        _REDIS_S,
        "gateway, planner",
    ),
    MetricSpec(
        "rc_redis_errors_total",
        "counter",
        "Failed Redis commands by deployment, command and kind (connection, timeout, response).",
        ("deployment", "operation", "kind"),
        source="gateway, planner",
    ),
    MetricSpec(
        "rc_redis_up",
        "gauge",
        "1 when the last Redis health probe succeeded, else 0 (probed with Serve's health checks).",
        ("deployment",),
        source="gateway, planner",
    ),
    # Autoscaling decisions: Ray Serve exports ray_serve_autoscaling_target_replicas and, for
    # autoscaled deployments, ray_serve_autoscaling_desired_replicas; effort-budget policy metrics
    # belong to autoscale/ (reserved: rc_autoscale_desired_replicas).
)

SPECS: Mapping[str, MetricSpec] = {spec.name: spec for spec in CATALOGUE}

# Ray Serve's own metrics the dashboards and alerts use (exported names).
RAY_SERVE_METRICS: tuple[str, ...] = (
    "ray_serve_deployment_replica_healthy",
    "ray_serve_autoscaling_target_replicas",
    "ray_serve_autoscaling_desired_replicas",
    "ray_serve_replica_processing_queries",
    "ray_serve_deployment_queued_queries",
    "ray_serve_num_ongoing_requests_at_replicas",
    "ray_serve_deployment_processing_latency_ms",
    "ray_serve_deployment_error_counter_total",
    "ray_serve_deployment_request_counter_total",
)


def exported_names() -> set[str]:
    """Every series name Prometheus can see for the catalogue (histograms' three series)."""
    names: set[str] = set()
    for spec in CATALOGUE:
        if spec.kind == "histogram":
            names.update(spec.exported + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(spec.exported)
    return names


class MetricSet:
    """The `ray.util.metrics` objects of one process, created on first use."""

    def __init__(self) -> None:
        self._metrics: dict[str, Any] = {}

    def get(self, name: str) -> Any:
        metric = self._metrics.get(name)
        if metric is None:
            from ray.util import metrics

            spec = SPECS[name]
            if spec.kind == "counter":
                metric = metrics.Counter(spec.name, description=spec.description, tag_keys=spec.labels)
            elif spec.kind == "gauge":
                metric = metrics.Gauge(spec.name, description=spec.description, tag_keys=spec.labels)
            else:
                metric = metrics.Histogram(
                    spec.name,
                    description=spec.description,
                    boundaries=list(spec.buckets),
                    tag_keys=spec.labels,
                )
            self._metrics[name] = metric
        return metric

    def inc(self, name: str, value: float = 1.0, **tags: str) -> None:
        if value > 0:
            self.get(name).inc(value, tags=tags or None)

    def set(self, name: str, value: float, **tags: str) -> None:
        self.get(name).set(value, tags=tags or None)

    def observe(self, name: str, value: float, **tags: str) -> None:
        self.get(name).observe(value, tags=tags or None)


# ---- gateway ---------------------------------------------------------------------------


class RequestTracker:
    """One chat-completion request; the gateway fills in what it learns as it goes."""

    def __init__(self) -> None:
        self.effort = UNKNOWN
        self.tenant = UNKNOWN
        # What was asked: answers to problems with an evaluation label are graded.
        self.problem: Problem | None = None
        self.started = time.monotonic()


class GatewayMetrics:
    """`statuses` maps exceptions other than `ApiError` to the HTTP status they are answered with."""

    def __init__(
        self, metrics: MetricSet | None = None, statuses: Mapping[type[BaseException], int] | None = None
    ) -> None:
        self.metrics = metrics or MetricSet()
        self._statuses = dict(statuses or {})
        self._in_flight: Tally[str] = Tally()
        self._budget_in_flight: Tally[str] = Tally()
        # Every effort's gauges exist from the start, so dashboards show 0 rather than nothing.
        for effort in Effort:
            self._publish_in_flight(effort.value)

    @contextmanager
    def request(self) -> Iterator[RequestTracker]:
        """Count the request with its final HTTP status, whatever happens inside."""
        tracker = RequestTracker()
        status = 200
        try:
            yield tracker
        except ApiError as exc:
            status = exc.status
            raise
        except BaseException as exc:
            status = next((s for kind, s in self._statuses.items() if isinstance(exc, kind)), 500)
            raise
        finally:
            self.metrics.inc(
                "rc_requests_total", effort=tracker.effort, status=str(status), tenant=tracker.tenant
            )

    @contextmanager
    def in_flight(self, effort: Effort, budget_tokens: int) -> Iterator[None]:
        self._in_flight[effort.value] += 1
        self._budget_in_flight[effort.value] += budget_tokens
        self._publish_in_flight(effort.value)
        try:
            yield
        finally:
            self._in_flight[effort.value] -= 1
            self._budget_in_flight[effort.value] -= budget_tokens
            self._publish_in_flight(effort.value)

    def _publish_in_flight(self, effort: str) -> None:
        self.metrics.set("rc_requests_in_flight", self._in_flight[effort], effort=effort)
        self.metrics.set("rc_budget_in_flight_tokens", self._budget_in_flight[effort], effort=effort)

    def answered(
        self, tracker: RequestTracker, result: SolveResult, granted_tokens: int, spent_tokens: int
    ) -> None:
        effort = tracker.effort
        m = self.metrics
        quality = {
            "effort": effort,
            "status": result.status,
            "verified": "true" if result.verified else "false",
            "correct": _flag(_graded(tracker.problem, result.answer)),
        }
        m.inc("rc_answers_total", 1, **quality)
        m.inc("rc_answer_reasoning_tokens_total", result.usage.completion_tokens, **quality)
        m.observe("rc_time_to_answer_seconds", time.monotonic() - tracker.started, effort=effort)
        m.inc("rc_reasoning_tokens_total", result.usage.completion_tokens, effort=effort)
        m.inc("rc_prompt_tokens_total", result.usage.prompt_tokens, effort=effort)
        m.inc("rc_cached_tokens_total", result.usage.cached_tokens, effort=effort)
        m.inc("rc_budget_granted_tokens_total", granted_tokens, effort=effort)
        m.inc("rc_budget_spent_tokens_total", spent_tokens, effort=effort)
        if granted_tokens > 0:
            m.observe("rc_budget_spent_ratio", spent_tokens / granted_tokens, effort=effort)


# ---- planner -----------------------------------------------------------------------------


class PlannerMetrics(SearchObserver):
    """The search observer the planner passes to its `SearchController`."""

    def __init__(self, metrics: MetricSet | None = None) -> None:
        self.metrics = metrics or MetricSet()

    def first_progress(self, request: SolveRequest, elapsed_s: float) -> None:
        self.metrics.observe("rc_time_to_first_progress_seconds", elapsed_s, effort=request.effort.value)

    def chains_generated(self, request: SolveRequest, count: int, tokens: int) -> None:
        self.metrics.inc("rc_branches_generated_total", count, effort=request.effort.value)

    def chains_verified(self, request: SolveRequest, count: int) -> None:
        self.metrics.inc("rc_branches_verified_total", count, effort=request.effort.value)

    def search_finished(
        self,
        request: SolveRequest,
        strategy: str,
        outcome: str,
        nodes: int,
        depth: int,
        discarded: int,
        elapsed_s: float,
    ) -> None:
        effort = request.effort.value
        m = self.metrics
        m.inc("rc_searches_total", effort=effort, strategy=strategy, outcome=outcome)
        m.inc("rc_branches_pruned_total", discarded, effort=effort)
        m.observe("rc_tree_nodes", nodes, effort=effort)
        m.observe("rc_tree_depth", depth, effort=effort)


# ---- verifier ----------------------------------------------------------------------------


class VerifierMetrics:
    def __init__(self, metrics: MetricSet | None = None) -> None:
        self.metrics = metrics or MetricSet()

    def verified(self, result: VerifyResult) -> None:
        outcomes: Tally[tuple[str, str]] = Tally()
        for verdicts in result.verdicts:
            for verdict in verdicts:
                outcome = "abstain" if verdict.passed is None else "pass" if verdict.passed else "fail"
                outcomes[(verdict.verifier, outcome)] += 1
        for (verifier, outcome), count in outcomes.items():
            self.metrics.inc("rc_verifier_verdicts_total", count, verifier=verifier, outcome=outcome)


# ---- branch-generator ------------------------------------------------------------------------


class EngineMetrics:
    def __init__(self, metrics: MetricSet | None = None) -> None:
        self.metrics = metrics or MetricSet()
        self._ongoing = 0
        self.metrics.set("rc_engine_ongoing_requests", 0)

    @contextmanager
    def call(self) -> Iterator[None]:
        self._ongoing += 1
        self.metrics.set("rc_engine_ongoing_requests", self._ongoing)
        started = time.monotonic()
        outcome = "error"
        try:
            yield
            outcome = "ok"
        finally:
            self._ongoing -= 1
            self.metrics.set("rc_engine_ongoing_requests", self._ongoing)
            self.metrics.observe("rc_engine_request_duration_seconds", time.monotonic() - started)
            self.metrics.inc("rc_engine_requests_total", outcome=outcome)

    def generated(self, result: GenerationResult) -> None:
        self.metrics.inc("rc_engine_generated_tokens_total", sum(c.token_count for c in result.completions))
        self.metrics.inc("rc_engine_prompt_tokens_total", result.prompt_tokens)
        self.metrics.inc("rc_engine_cached_tokens_total", result.cached_tokens)


# ---- Redis -----------------------------------------------------------------------------------


class RedisMetrics:
    def __init__(self, deployment: str, metrics: MetricSet | None = None) -> None:
        self.deployment = deployment
        self.metrics = metrics or MetricSet()

    def observe(self, operation: str, started: float, error: BaseException | None) -> None:
        self.metrics.observe(
            "rc_redis_operation_duration_seconds",
            time.monotonic() - started,
            deployment=self.deployment,
            operation=operation,
        )
        # NOSCRIPT is how redis-py loads a Lua script the first time; it is not a failure.
        if isinstance(error, RedisError) and not isinstance(error, NoScriptError):
            self.metrics.inc(
                "rc_redis_errors_total",
                deployment=self.deployment,
                operation=operation,
                kind=_error_kind(error),
            )

    async def probe(self, client: Redis, timeout_s: float = 3.0) -> bool:
        """Ping Redis and publish `rc_redis_up`; never raises (Serve health checks call it)."""
        try:
            # Bounded: a hanging probe would fail Serve's health check and restart the replica.
            await asyncio.wait_for(client.ping(), timeout_s)
            up = True
        except Exception:
            up = False
        self.metrics.set("rc_redis_up", 1.0 if up else 0.0, deployment=self.deployment)
        return up


def _graded(problem: Problem | None, answer: str) -> bool | None:
    """Whether the answer is right, where the problem carries a label to grade it by."""
    return None if problem is None else get_task(problem.task).grade(answer, problem)


def _flag(value: bool | None) -> str:
    return UNKNOWN if value is None else str(value).lower()


def _error_kind(error: RedisError) -> str:
    if isinstance(error, RedisTimeoutError):
        return "timeout"
    if isinstance(error, RedisConnectionError):
        return "connection"
    return "response"


class InstrumentedPipeline(Pipeline):
    rc_metrics: RedisMetrics

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        started = time.monotonic()
        error: BaseException | None = None
        try:
            return await super().execute(raise_on_error)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.rc_metrics.observe("PIPELINE", started, error)


class InstrumentedRedis(Redis):
    """An asyncio Redis client that times every command (Lua scripts run as EVALSHA)."""

    rc_metrics: RedisMetrics

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        operation = str(args[0]).split(" ", 1)[0].upper() if args else "UNKNOWN"
        started = time.monotonic()
        error: BaseException | None = None
        try:
            return await super().execute_command(*args, **options)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.rc_metrics.observe(operation, started, error)

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        pipe = InstrumentedPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.rc_metrics = self.rc_metrics
        return pipe


def instrumented_redis(config: RedisConfig, metrics: RedisMetrics) -> InstrumentedRedis:
    """A timed client with the cluster's timeouts and bounded pool (cluster.store.connection)."""
    client = redis_client(config, InstrumentedRedis)
    client.rc_metrics = metrics
    return client


def catalogue_rows(specs: Sequence[MetricSpec] = CATALOGUE) -> list[str]:
    """Markdown table rows of the catalogue (docs/monitoring.md)."""
    rows = []
    for spec in specs:
        labels = ", ".join(spec.labels) or "-"
        rows.append(f"| `{spec.exported}` | {spec.kind} | {labels} | {spec.source} | {spec.description} |")
    return rows
