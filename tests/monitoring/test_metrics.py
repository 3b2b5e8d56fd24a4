"""The metric recorders: what each deployment records, the search observer on the real
controller (scripted engine, real Redis), and the instrumented Redis client."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from cluster.api import ApiError
from cluster.config import RedisConfig
from cluster.search.context import SearchServices
from cluster.search.controller import DeadlineExceeded, SearchController
from cluster.store import TOKENS, VERIFIER_CALLS, BudgetLedger, KeySpace, TreeMeta, TreeStore
from cluster.tasks import pose
from cluster.types import (
    ChatMessage,
    Completion,
    Effort,
    GenerationResult,
    Problem,
    SolveRequest,
    SolveResult,
    Usage,
    Verdict,
    VerifyResult,
)
from cluster.verifiers import build_verifier
from cluster.verifiers.service import VerificationService
from monitoring.metrics import (
    CATALOGUE,
    SPECS,
    EngineMetrics,
    GatewayMetrics,
    MetricSet,
    PlannerMetrics,
    RedisMetrics,
    VerifierMetrics,
    catalogue_rows,
    instrumented_redis,
)
from tests.integration.test_search import RIGHT, WRONG, config_with
from tests.scripted import ScriptedGenerator

Key = tuple[str, tuple[tuple[str, str], ...]]


class Recorder(MetricSet):
    """Records what would go to Ray's metrics, with the label checks Ray makes."""

    def __init__(self) -> None:
        super().__init__()
        self.counters: dict[Key, float] = defaultdict(float)
        self.gauges: dict[Key, float] = {}
        self.observations: dict[Key, list[float]] = defaultdict(list)

    def _key(self, name: str, tags: dict[str, str]) -> Key:
        spec = SPECS[name]
        assert set(tags) == set(spec.labels), (name, tags)
        return name, tuple(sorted(tags.items()))

    def inc(self, name: str, value: float = 1.0, **tags: str) -> None:
        assert SPECS[name].kind == "counter"
        if value > 0:
            self.counters[self._key(name, tags)] += value

    def set(self, name: str, value: float, **tags: str) -> None:
        assert SPECS[name].kind == "gauge"
        self.gauges[self._key(name, tags)] = value

    def observe(self, name: str, value: float, **tags: str) -> None:
        assert SPECS[name].kind == "histogram"
        self.observations[self._key(name, tags)].append(value)

    def total(self, name: str, **match: str) -> float:
        return sum(
            v for (n, tags), v in self.counters.items() if n == name and match.items() <= dict(tags).items()
        )


def test_catalogue_follows_prometheus_conventions() -> None:
    for spec in CATALOGUE:
        assert re.fullmatch(r"rc_[a-z][a-z0-9_]*", spec.name), spec.name
        assert spec.description
        if spec.kind == "counter":
            assert spec.name.endswith("_total"), spec.name
        else:
            assert not spec.name.endswith("_total"), spec.name
        if spec.kind == "histogram":
            assert list(spec.buckets) == sorted(spec.buckets) and spec.buckets[0] > 0, spec.name
            assert spec.name.endswith(("_seconds", "_ratio", "_nodes", "_depth")), spec.name
        # Bounded labels only: no ids, no free text.
        assert not {"tree_id", "request_id", "replica", "question"} & set(spec.labels), spec.name
    assert len(SPECS) == len(CATALOGUE)


def test_docs_list_the_catalogue() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "monitoring.md").read_text()
    for row in catalogue_rows():
        assert row in docs, f"docs/monitoring.md lacks or differs on: {row}"


def test_gateway_counts_every_status() -> None:
    recorder = Recorder()
    gateway = GatewayMetrics(recorder, statuses={KeyError: 429})
    with gateway.request() as tracked:
        tracked.effort, tracked.tenant = "low", "acme"
    with pytest.raises(ApiError), gateway.request() as tracked:
        tracked.tenant = "acme"
        raise ApiError(400, "bad effort")
    with pytest.raises(KeyError), gateway.request() as tracked:
        raise KeyError("admission")
    with pytest.raises(RuntimeError), gateway.request() as tracked:
        tracked.effort = "high"
        raise RuntimeError("boom")
    assert dict(recorder.counters) == {
        ("rc_requests_total", (("effort", "low"), ("status", "200"), ("tenant", "acme"))): 1,
        ("rc_requests_total", (("effort", "unknown"), ("status", "400"), ("tenant", "acme"))): 1,
        ("rc_requests_total", (("effort", "unknown"), ("status", "429"), ("tenant", "unknown"))): 1,
        ("rc_requests_total", (("effort", "high"), ("status", "500"), ("tenant", "unknown"))): 1,
    }


def test_gateway_in_flight_demand_and_answer_accounting() -> None:
    recorder = Recorder()
    gateway = GatewayMetrics(recorder)
    # Every effort's demand gauge exists at 0 before any request.
    assert recorder.gauges[("rc_budget_in_flight_tokens", (("effort", "high"),))] == 0
    with gateway.in_flight(Effort.HIGH, 2112), gateway.in_flight(Effort.HIGH, 100):
        assert recorder.gauges[("rc_budget_in_flight_tokens", (("effort", "high"),))] == 2212
        assert recorder.gauges[("rc_requests_in_flight", (("effort", "high"),))] == 2
    assert recorder.gauges[("rc_budget_in_flight_tokens", (("effort", "high"),))] == 0

    with gateway.request() as tracked:
        tracked.effort = "medium"
        result = SolveResult(
            "t", "42", "42", "s", "self_consistency", Usage(100, 600, 0), 4, 0, ("r", "n"), "stop"
        )
        gateway.answered(tracked, result, granted_tokens=1024, spent_tokens=600)
    assert recorder.total("rc_reasoning_tokens_total", effort="medium") == 600
    assert recorder.total("rc_prompt_tokens_total", effort="medium") == 100
    assert recorder.total("rc_cached_tokens_total") == 0  # a zero increment records nothing
    assert recorder.total("rc_budget_granted_tokens_total", effort="medium") == 1024
    assert recorder.observations[("rc_budget_spent_ratio", (("effort", "medium"),))] == [600 / 1024]
    assert len(recorder.observations[("rc_time_to_answer_seconds", (("effort", "medium"),))]) == 1


def _answer(
    answer: str, finish_reason: str = "stop", tokens: int = 50, verified: bool = False
) -> SolveResult:
    return SolveResult(
        "t",
        answer,
        answer,
        "s",
        "beam_search",
        Usage(10, tokens, 0),
        2,
        1,
        (),
        finish_reason,
        status="complete" if finish_reason == "stop" else "incomplete",
        incomplete_reason=None if finish_reason == "stop" else "budget",
        verified=verified,
    )


def test_answers_are_counted_by_status_and_graded_where_they_have_a_label() -> None:
    recorder = Recorder()
    gateway = GatewayMetrics(recorder)
    puzzle = pose([ChatMessage("user", "4 9 10 13")], "game24")
    open_question = pose([ChatMessage("user", "What is 2+2?")], "general")
    labelled = pose([ChatMessage("user", "What is 2+2?")], "math", reference="4")
    answers = [
        (puzzle, _answer("(13 - 9) * (10 - 4)", tokens=80, verified=True)),
        (puzzle, _answer("4 + 9 + 10 + 13", tokens=60)),
        (open_question, _answer("4", finish_reason="length", tokens=30)),
        (labelled, _answer("4", tokens=20)),
    ]
    for problem, result in answers:
        with gateway.request() as tracked:
            tracked.effort, tracked.problem = "high", problem
            gateway.answered(tracked, result, granted_tokens=100, spent_tokens=result.usage.completion_tokens)
    assert recorder.total("rc_answers_total") == 4
    assert recorder.total("rc_answers_total", correct="true") == 2
    assert recorder.total("rc_answers_total", correct="false") == 1
    assert recorder.total("rc_answers_total", correct="unknown", status="incomplete") == 1
    assert recorder.total("rc_answers_total", verified="true") == 1
    assert recorder.total("rc_answers_total", verified="false") == 3
    assert recorder.total("rc_answer_reasoning_tokens_total", correct="true") == 100
    assert recorder.total("rc_answer_reasoning_tokens_total", correct="false") == 60
    assert recorder.total("rc_answer_reasoning_tokens_total", status="complete") == 160


def test_verifier_and_engine_metrics() -> None:
    recorder = Recorder()
    VerifierMetrics(recorder).verified(
        VerifyResult(
            (
                (Verdict("arithmetic", 1.0, True, "ok"), Verdict("game24", 0.5, None, "not a game")),
                (Verdict("arithmetic", 0.0, False, "7*3=20"),),
            )
        )
    )
    assert recorder.total("rc_verifier_verdicts_total", verifier="arithmetic", outcome="pass") == 1
    assert recorder.total("rc_verifier_verdicts_total", verifier="arithmetic", outcome="fail") == 1
    assert recorder.total("rc_verifier_verdicts_total", verifier="game24", outcome="abstain") == 1

    engine = EngineMetrics(recorder)
    with engine.call():
        assert recorder.gauges[("rc_engine_ongoing_requests", ())] == 1
    engine.generated(GenerationResult((Completion("a b", 2, "stop"), Completion("c", 1, "stop")), 30, 0, "r"))
    with pytest.raises(ValueError), engine.call():
        raise ValueError("engine died")
    assert recorder.total("rc_engine_generated_tokens_total") == 3
    assert recorder.total("rc_engine_requests_total", outcome="ok") == 1
    assert recorder.total("rc_engine_requests_total", outcome="error") == 1
    assert recorder.gauges[("rc_engine_ongoing_requests", ())] == 0


async def _solve(
    redis: Redis, generator: ScriptedGenerator, effort: Effort, recorder: Recorder, **config: Any
) -> SolveResult:
    cfg = config_with(effort.value, **config)
    keys = KeySpace("mon")
    store, ledger = TreeStore(redis, keys), BudgetLedger(redis, keys)
    budget = cfg.budget_for(effort)
    tree_id = f"mon-{effort.value}-{len(generator.requests)}"
    await store.create_tree(TreeMeta(tree_id, "tenant", effort.value, budget.strategy), 600)
    await ledger.grant(
        tree_id, {TOKENS: budget.max_reasoning_tokens, VERIFIER_CALLS: budget.max_verifier_calls}
    )
    verifiers = VerificationService({n: build_verifier(n) for n in ("arithmetic", "numeric")})
    services = SearchServices(store, ledger, generator, verifiers, PlannerMetrics(recorder))
    controller = SearchController(cfg, services)
    problem = Problem((ChatMessage("user", "3 pencils cost 45 cents; what do 7 cost?"),))
    return await controller.solve(
        SolveRequest(tree_id, "tenant", effort, problem, "PROMPT", budget.max_reasoning_tokens)
    )


@pytest.mark.integration
async def test_search_observer_on_the_controller(redis_client: Redis) -> None:
    recorder = Recorder()
    generator = ScriptedGenerator([[RIGHT, WRONG, RIGHT, WRONG]])
    await _solve(
        redis_client,
        generator,
        Effort.HIGH,
        recorder,
        strategy="best_of_n",
        branches=4,
        per_branch=64,
        verifiers=["arithmetic"],
    )
    assert recorder.total("rc_branches_generated_total", effort="high") == 4
    assert recorder.total("rc_branches_verified_total", effort="high") == 4
    assert recorder.total("rc_branches_pruned_total", effort="high") == 3
    assert recorder.total("rc_searches_total", effort="high", strategy="best_of_n", outcome="done") == 1
    assert recorder.observations[("rc_tree_nodes", (("effort", "high"),))] == [5]
    assert recorder.observations[("rc_tree_depth", (("effort", "high"),))] == [1]
    assert len(recorder.observations[("rc_time_to_first_progress_seconds", (("effort", "high"),))]) == 1

    slow = ScriptedGenerator([[RIGHT]], delay_s=2.0)
    with pytest.raises(DeadlineExceeded):
        await _solve(
            redis_client,
            slow,
            Effort.LOW,
            recorder,
            strategy="single_chain",
            branches=1,
            per_branch=64,
            verifiers=[],
            deadline_s=0.2,
        )
    assert recorder.total("rc_searches_total", effort="low", outcome="deadline") == 1
    assert ("rc_time_to_first_progress_seconds", (("effort", "low"),)) not in recorder.observations


@pytest.mark.integration
async def test_instrumented_redis_times_commands_scripts_and_pipelines(redis_server: str) -> None:
    recorder = Recorder()
    metrics = RedisMetrics("planner", recorder)
    client = instrumented_redis(RedisConfig(url=redis_server), metrics)
    try:
        await client.set("mon:k", "1")
        script = client.register_script("return redis.call('GET', KEYS[1])")
        await script(keys=["mon:k"])  # NOSCRIPT first, then loaded: not an error
        async with client.pipeline(transaction=True) as pipe:
            await pipe.incr("mon:n").incr("mon:n").execute()
        assert await metrics.probe(client)
    finally:
        await client.aclose()
    operations = {dict(tags)["operation"] for (name, tags) in recorder.observations}
    assert {"SET", "EVALSHA", "PIPELINE", "PING"} <= operations
    assert not recorder.counters, "no Redis errors expected"
    assert recorder.gauges[("rc_redis_up", (("deployment", "planner"),))] == 1


@pytest.mark.integration
async def test_unreachable_redis_counts_errors_and_reports_down() -> None:
    recorder = Recorder()
    metrics = RedisMetrics("gateway", recorder)
    client = instrumented_redis(RedisConfig(url="redis://127.0.0.1:1/0"), metrics)
    try:
        with pytest.raises(RedisConnectionError):
            await client.get("anything")
        assert not await metrics.probe(client)
    finally:
        await client.aclose()
    assert (
        recorder.total("rc_redis_errors_total", deployment="gateway", operation="GET", kind="connection") == 1
    )
    assert recorder.gauges[("rc_redis_up", (("deployment", "gateway"),))] == 0
