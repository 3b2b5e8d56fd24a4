"""The worker deployments: branch-generator (owns a vLLM engine), verifier and planner."""

from __future__ import annotations

import logging
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle
from redis.asyncio import Redis

from cluster.config import ClusterConfig
from cluster.engine.tokenizer import load_tokenizer
from cluster.engine.vllm_engine import VLLMEngine
from cluster.models import resolve_model_dir
from cluster.prompts import PromptBuilder
from cluster.search.controller import SearchController
from cluster.store import BudgetLedger, KeySpace, TreeStore
from cluster.types import (
    GenerationRequest,
    GenerationResult,
    SolveRequest,
    SolveResult,
    VerifyRequest,
    VerifyResult,
)
from cluster.verifiers import build_verifier
from cluster.verifiers.service import VerificationService

logger = logging.getLogger(__name__)


# Module helpers stand above the deployment classes: Serve pickles a class when it is
# decorated, before anything below it in this module exists.


def _replica_id() -> str:
    return serve.get_replica_context().replica_id.unique_id


class GeneratorClient:
    """A branch-generator handle with the `Generator` protocol the search and judges use."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self._handle = handle

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        result: GenerationResult = await self._handle.generate.remote(request)
        return result


class VerifierClient:
    def __init__(self, handle: DeploymentHandle) -> None:
        self._handle = handle

    async def verify(self, request: VerifyRequest) -> VerifyResult:
        result: VerifyResult = await self._handle.verify.remote(request)
        return result


def _build_verifier(
    name: str, config: ClusterConfig, generator: DeploymentHandle, prompts: PromptBuilder | None
) -> Any:
    if name != "judge":
        return build_verifier(name)
    return build_verifier(
        name, engine=GeneratorClient(generator), prompts=prompts, max_model_len=config.model.max_model_len
    )


@serve.deployment
class BranchGenerator:
    """Owns one vLLM engine; each expansion is one batched engine call with n=k."""

    def __init__(self, config: ClusterConfig) -> None:
        self._engine = VLLMEngine.start(config.model, resolve_model_dir(config.model), replica=_replica_id())

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        return await self._engine.generate(request)

    async def check_health(self) -> None:
        await self._engine.check_health()

    async def health(self) -> dict[str, Any]:
        await self._engine.check_health()
        info = self._engine.info
        return {"status": "ok", "model": info.model, "device": info.device, "replica": self._engine.replica}

    def __del__(self) -> None:
        self._engine.shutdown()


@serve.deployment
class Verifier:
    """Scores candidates: programmatic verifiers, and a model judge through the generators."""

    def __init__(self, config: ClusterConfig, generator: DeploymentHandle) -> None:
        names = sorted({name for budget in config.efforts.values() for name in budget.verifiers})
        prompts = PromptBuilder(load_tokenizer(config.model)) if "judge" in names else None
        self._service = VerificationService(
            {name: _build_verifier(name, config, generator, prompts) for name in names}
        )
        self._names = names

    async def verify(self, request: VerifyRequest) -> VerifyResult:
        return await self._service.verify(request)

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
        self._redis = Redis.from_url(config.redis.url)
        keys = KeySpace(config.redis.key_prefix)
        self._controller = SearchController(
            config,
            TreeStore(self._redis, keys),
            BudgetLedger(self._redis, keys),
            GeneratorClient(generator),
            VerifierClient(verifier),
        )

    async def solve(self, request: SolveRequest) -> SolveResult:
        return await self._controller.solve(request)

    async def health(self) -> dict[str, Any]:
        await self._redis.ping()
        return {"status": "ok", "replica": _replica_id()}
