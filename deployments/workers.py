"""The worker deployments: branch-generator (owns a vLLM engine), verifier and planner."""

from __future__ import annotations

import logging
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle
from redis.asyncio import Redis

from autoscale.demand import DemandProbe, ThroughputMeter
from cluster.config import ClusterConfig
from cluster.engine.tokenizer import load_tokenizer
from cluster.engine.vllm_engine import VLLMEngine
from cluster.models import resolve_model_dir
from cluster.prompts import PromptBuilder
from cluster.search.context import SearchServices
from cluster.search.controller import SearchController
from cluster.store import BudgetLedger, KeySpace, TreeLeases, TreeStore
from cluster.tracing import Tracer
from cluster.types import (
    GenerationRequest,
    GenerationResult,
    SolveRequest,
    SolveResult,
    VerifyRequest,
    VerifyResult,
)
from cluster.verifiers import Verifier as VerifierBase
from cluster.verifiers import build_verifier
from cluster.verifiers.service import VerificationService
from monitoring.metrics import (
    EngineMetrics,
    PlannerMetrics,
    RedisMetrics,
    VerifierMetrics,
    instrumented_redis,
)

logger = logging.getLogger(__name__)


# Module helpers stand above the deployment classes: Serve pickles a class when it is
# decorated, before anything below it in this module exists.


def _replica_id() -> str:
    return serve.get_replica_context().replica_id.unique_id


class GeneratorClient:
    """A branch-generator handle with the `Generator` protocol the search and judges use.

    Each call carries the caller's trace context, so the engine's span joins the request's trace.
    """

    def __init__(self, handle: DeploymentHandle, tracer: Tracer) -> None:
        self._handle = handle
        self._tracer = tracer

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        result: GenerationResult = await self._handle.generate.remote(self._tracer.propagate(request))
        return result


class VerifierClient:
    def __init__(self, handle: DeploymentHandle, tracer: Tracer) -> None:
        self._handle = handle
        self._tracer = tracer

    async def verify(self, request: VerifyRequest) -> VerifyResult:
        result: VerifyResult = await self._handle.verify.remote(self._tracer.propagate(request))
        return result


def _probe(config: ClusterConfig) -> DemandProbe:
    # Without autoscaling nothing reads the demand: no Redis connection is made for it.
    url = config.redis.url if config.autoscaling.enabled else None
    return DemandProbe(url, config.redis.key_prefix, config.autoscaling.min_slack_s)


def _max_num_seqs(engine: VLLMEngine) -> int:
    """The engine's batch limit (vLLM's scheduler max_num_seqs); 256 if it cannot be read."""
    config = getattr(getattr(engine, "_engine", None), "vllm_config", None)
    value = getattr(getattr(config, "scheduler_config", None), "max_num_seqs", None)
    return int(value) if isinstance(value, int) and value > 0 else 256


def _build_verifier(
    name: str, config: ClusterConfig, generator: GeneratorClient, prompts: PromptBuilder | None
) -> VerifierBase:
    if name != "judge":
        return build_verifier(name)
    return build_verifier(name, engine=generator, prompts=prompts, max_model_len=config.model.max_model_len)


@serve.deployment
class BranchGenerator:
    """Owns one vLLM engine; each expansion is one batched engine call with n=k."""

    def __init__(self, config: ClusterConfig) -> None:
        self._engine = VLLMEngine.start(config.model, resolve_model_dir(config.model), replica=_replica_id())
        # Online throughput of this engine: what one replica is worth to the autoscaler.
        self._meter = ThroughputMeter(
            max_seqs=config.autoscaling.generator.max_seqs or _max_num_seqs(self._engine)
        )
        self._probe = _probe(config)
        self._metrics = EngineMetrics()
        self._tracer = Tracer(config.tracing, "branch_generator")

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        self._meter.begin(request.n)
        tokens = 0
        try:
            with self._tracer.span(
                "engine.generate",
                parent=request.trace_context,
                attributes={"gen_ai.request.max_tokens": request.max_tokens, "rc.n": request.n},
            ) as span:
                with self._metrics.call():
                    result = await self._engine.generate(request)
                self._metrics.generated(result)
                tokens = sum(c.token_count for c in result.completions)
                span.set_attributes(
                    {
                        "gen_ai.usage.input_tokens": result.prompt_tokens,
                        "gen_ai.usage.output_tokens": tokens,
                        "rc.cached_tokens": result.cached_tokens,
                        "rc.replica": result.replica,
                    }
                )
            return result
        finally:
            self._meter.end(tokens, request.n)

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Custom metrics for `autoscale.policies.GeneratorPolicy` (Serve calls this periodically)."""
        demand = await self._probe.demand()
        await self._probe.publish_throughput(self._engine.replica, self._meter.tokens_per_s)
        return {
            **demand.as_metrics(),
            "throughput_tokens_per_s": float(self._meter.tokens_per_s or 0.0),
            "generate_calls_in_flight": float(self._meter.in_flight),
        }

    async def check_health(self) -> None:
        await self._engine.check_health()

    async def health(self) -> dict[str, Any]:
        await self._engine.check_health()
        info = self._engine.info
        return {"status": "ok", "model": info.model, "device": info.device, "replica": self._engine.replica}

    def __del__(self) -> None:
        self._tracer.shutdown()
        self._engine.shutdown()


@serve.deployment
class Verifier:
    """Scores candidates: programmatic verifiers, and a model judge through the generators."""

    def __init__(self, config: ClusterConfig, generator: DeploymentHandle) -> None:
        names = sorted({name for budget in config.efforts.values() for name in budget.verifiers})
        prompts = PromptBuilder(load_tokenizer(config.model)) if "judge" in names else None
        self._tracer = Tracer(config.tracing, "verifier")
        engine = GeneratorClient(generator, self._tracer)
        self._service = VerificationService(
            {name: _build_verifier(name, config, engine, prompts) for name in names}
        )
        self._names = names
        self._probe = _probe(config)
        self._pending = 0
        self._metrics = VerifierMetrics()

    async def verify(self, request: VerifyRequest) -> VerifyResult:
        self._pending += len(request.candidates)
        try:
            with self._tracer.span(
                "verifier.verify",
                parent=request.trace_context,
                attributes={
                    "rc.verifiers": ",".join(request.verifiers),
                    "rc.candidates": len(request.candidates),
                },
            ):
                result = await self._service.verify(request)
            self._metrics.verified(result)
            return result
        finally:
            self._pending -= len(request.candidates)

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Custom metrics for `autoscale.policies.VerifierPolicy`."""
        demand = await self._probe.demand()
        return {**demand.as_metrics(), "verifications_running": float(self._pending)}

    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "verifiers": self._names, "replica": _replica_id()}


@serve.deployment
class Planner:
    """The search controller: owns one tree per request; all its state lives in Redis."""

    def __init__(
        self, config: ClusterConfig, generator: DeploymentHandle, verifier: DeploymentHandle
    ) -> None:
        if config.redis.url is None:
            raise ValueError("redis.url must be set before deploying the planner (or set REDIS_URL)")
        observer = PlannerMetrics()
        self._redis_metrics = RedisMetrics("planner", observer.metrics)
        self._redis: Redis = instrumented_redis(config.redis.url, self._redis_metrics)
        keys = KeySpace(config.redis.key_prefix)
        self._tracer = Tracer(config.tracing, "planner")
        services = SearchServices(
            TreeStore(self._redis, keys),
            BudgetLedger(self._redis, keys),
            GeneratorClient(generator, self._tracer),
            VerifierClient(verifier, self._tracer),
            observer,
            TreeLeases(self._redis, keys, config.redis.lease_ttl_s),
        )
        self._controller = SearchController(config, services)
        self._probe = _probe(config)
        self._solving = 0

    async def solve(self, request: SolveRequest) -> SolveResult:
        self._solving += 1
        try:
            with self._tracer.span(
                "planner.solve",
                parent=request.trace_context,
                tree_id=request.tree_id,
                attributes={
                    "rc.effort": request.effort.value,
                    "rc.strategy": request.strategy,
                    "rc.resume": request.resume,
                },
            ) as span:
                result = await self._controller.solve(request)
                span.set_attribute("rc.strategy", result.strategy)
                return result
        finally:
            self._solving -= 1

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Custom metrics for `autoscale.policies.PlannerPolicy`."""
        demand = await self._probe.demand()
        return {**demand.as_metrics(), "trees_running": float(self._solving)}

    async def check_health(self) -> None:
        # Serve's periodic health check publishes rc_redis_up; it never fails the replica.
        await self._redis_metrics.probe(self._redis)

    async def health(self) -> dict[str, Any]:
        await self._redis.ping()
        return {"status": "ok", "replica": _replica_id()}
