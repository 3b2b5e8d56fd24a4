"""The worker deployments: branch-generator (owns a vLLM engine), verifier and planner."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.handle import DeploymentHandle, DeploymentResponse, DeploymentResponseGenerator
from redis.asyncio import Redis

from autoscale.demand import DemandProbe, ThroughputMeter
from cluster.config import ClusterConfig
from cluster.engine.errors import EngineUnavailable
from cluster.engine.tokenizer import load_tokenizer
from cluster.engine.vllm_engine import VLLMEngine
from cluster.models import resolve_model_dir
from cluster.prompts import PromptBuilder
from cluster.sandbox import Sandbox
from cluster.search.context import SearchServices
from cluster.search.controller import SearchController
from cluster.store import BudgetLedger, KeySpace, TreeLeases, TreeStore
from cluster.store.connection import redis_client
from cluster.tasks import task_names, verifiers_for
from cluster.tracing import Tracer
from cluster.types import (
    GenerationRequest,
    GenerationResult,
    SolveRequest,
    SolveResult,
    VerifyRequest,
    VerifyResult,
)
from cluster.verifiers import VerifierDeps, build_verifier, describe
from cluster.verifiers.service import VerificationService
from deployments.errors import cause_of
from monitoring.metrics import (
    EngineMetrics,
    PlannerMetrics,
    RedisMetrics,
    VerifierMetrics,
    instrumented_redis,
)

logger = logging.getLogger(__name__)

# A dead engine's replica is replaced within tens of seconds (an engine start); calls that met
# it wait with doubling pauses, up to a couple of minutes in all.
ENGINE_RETRIES = 8
ENGINE_RETRY_PAUSE_S = 1.0
ENGINE_RETRY_MAX_PAUSE_S = 20.0


# Module helpers stand above the deployment classes: Serve pickles a class when it is
# decorated, before anything below it in this module exists.


def _replica_id() -> str:
    return serve.get_replica_context().replica_id.unique_id


class GeneratorClient:
    """A branch-generator handle with the `Generator` protocol the search and judges use.

    A call that meets a dead engine or replica goes again, after a pause, to whichever replica
    Serve routes it to then (a healthy one, or the one that replaced the dead one): the tree is
    in Redis, so the search loses nothing but time. The caller's own deadline (its task being
    cancelled) ends the retries, as does ENGINE_RETRIES.
    Each call carries the caller's trace context, so the engine's span joins the request's trace.
    """

    def __init__(self, handle: DeploymentHandle, tracer: Tracer) -> None:
        self._handle = handle
        self._tracer = tracer

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        traced = self._tracer.propagate(request)
        for attempt in range(ENGINE_RETRIES + 1):
            try:
                result: GenerationResult = await _call(self._handle.generate.remote(traced))
                return result
            except Exception as error:
                if attempt == ENGINE_RETRIES or not engine_lost(error):
                    raise
                logger.warning(
                    "an engine call met a dead engine (%s); trying again", type(cause_of(error)).__name__
                )
                await asyncio.sleep(min(ENGINE_RETRY_PAUSE_S * 2**attempt, ENGINE_RETRY_MAX_PAUSE_S))
        raise AssertionError("unreachable: the last attempt returns or raises")


class VerifierClient:
    def __init__(self, handle: DeploymentHandle, tracer: Tracer) -> None:
        self._handle = handle
        self._tracer = tracer

    async def verify(self, request: VerifyRequest) -> VerifyResult:
        result: VerifyResult = await _call(self._handle.verify.remote(self._tracer.propagate(request)))
        return result


async def _call(response: DeploymentResponse[Any] | DeploymentResponseGenerator[Any]) -> Any:
    """Await a Serve call; a caller that is cancelled (a deadline, a client gone) cancels the
    call too, so the engine stops working on it (awaiting alone would leave it running)."""
    if not isinstance(response, DeploymentResponse):
        raise TypeError("a streaming call where one answer was expected")
    try:
        return await response
    except asyncio.CancelledError:
        response.cancel()
        raise


def engine_lost(error: BaseException) -> bool:
    """Whether a call failed because its engine or replica died (worth trying elsewhere)."""
    return isinstance(cause_of(error), EngineUnavailable | RayActorError | ActorUnavailableError)


def _probe(config: ClusterConfig) -> DemandProbe:
    # Without autoscaling nothing reads the demand: no Redis connection is made for it.
    redis = redis_client(config.redis) if config.autoscaling.enabled else None
    return DemandProbe(redis, config.redis.key_prefix, config.autoscaling.min_slack_s)


def _max_num_seqs(engine: VLLMEngine) -> int:
    """The engine's batch limit (vLLM's scheduler max_num_seqs); 256 if it cannot be read."""
    config = getattr(getattr(engine, "_engine", None), "vllm_config", None)
    value = getattr(getattr(config, "scheduler_config", None), "max_num_seqs", None)
    return int(value) if isinstance(value, int) and value > 0 else 256


def _verifier_deps(names: list[str], config: ClusterConfig, engine: GeneratorClient) -> VerifierDeps:
    """The engine and prompts for model verifiers; nothing when every verifier is a program."""
    sandbox = Sandbox(config.sandbox)
    if all(describe(name).kind == "program" for name in names):
        return VerifierDeps(sandbox=sandbox)
    prompts = PromptBuilder(load_tokenizer(config.model))
    return VerifierDeps(engine, prompts, config.model.max_model_len, sandbox)


# The branch-generator's Serve deployment name (its class name, as `serve.deployment` names it).
GENERATOR_DEPLOYMENT = "BranchGenerator"


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
        metered = self._meter.measures(request.max_tokens)
        if metered:
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
            if metered:
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
        names = sorted(
            {
                name
                for budget in config.efforts.values()
                for task in task_names()
                for name in verifiers_for(budget.verifiers, task)
            }
        )
        self._tracer = Tracer(config.tracing, "verifier")
        deps = _verifier_deps(names, config, GeneratorClient(generator, self._tracer))
        self._service = VerificationService({name: build_verifier(name, deps) for name in names})
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
        observer = PlannerMetrics()
        self._redis_metrics = RedisMetrics("planner", observer.metrics)
        self._redis: Redis = instrumented_redis(config.redis, self._redis_metrics)
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
