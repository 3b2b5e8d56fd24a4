"""One configuration object for the whole cluster, loaded from YAML and passed down.

Operators edit the YAML (or Helm values that render it); every deployment receives the
same validated `ClusterConfig`, so there are no module-level settings anywhere else.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cluster.models import DEFAULT_MODEL, named_model
from cluster.types import Effort, TaskFamily

StrategyName = Literal[
    "single_chain", "self_consistency", "best_of_n", "beam_search", "dvts", "mcts", "compute_optimal"
]
STRATEGY_NAMES: tuple[str, ...] = get_args(StrategyName)
# Strategies that grow chains step by step, as a tree deeper than one level.
TREE_STRATEGIES = frozenset({"beam_search", "dvts", "mcts", "compute_optimal"})

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default_config.yaml")


class _Strict(BaseModel):
    # Unknown keys are almost always typos in an operator's YAML: refuse them loudly.
    model_config = ConfigDict(extra="forbid", frozen=True)


class EffortBudget(_Strict):
    """What one effort level may spend and how it searches."""

    strategy: StrategyName
    max_reasoning_tokens: Annotated[int, Field(gt=0)]
    # Chains per expansion; in tree search, proposals per expanded node times beam_width.
    max_branches: Annotated[int, Field(gt=0, le=64)]
    # Tree search: the most steps a chain may take before it must answer.
    max_depth: Annotated[int, Field(gt=0, le=64)] = 8
    max_verifier_calls: Annotated[int, Field(ge=0)]
    deadline_s: Annotated[float, Field(gt=0)]
    max_tokens_per_branch: Annotated[int, Field(gt=0)]
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.8
    top_k: int = 40
    # Verifiers that score candidates, in order; a model judge only where no program can judge.
    verifiers: tuple[str, ...] = ("arithmetic",)
    # Tree search: nodes kept per round (beam search) or subtrees (DVTS: max_branches/beam_width).
    beam_width: Annotated[int, Field(gt=0, le=64)] = 4
    max_tokens_per_step: Annotated[int, Field(gt=0)] = 96
    # MCTS: weight of the prior (PUCT) against the mean value of a child.
    exploration: Annotated[float, Field(ge=0)] = 1.0
    # compute_optimal: short chains sampled first to estimate how hard the problem is.
    probe_branches: Annotated[int, Field(gt=0, le=64)] = 3
    probe_tokens_per_branch: Annotated[int, Field(gt=0)] = 128

    @model_validator(mode="after")
    def _branch_budget_is_reachable(self) -> EffortBudget:
        if self.max_tokens_per_branch > self.max_reasoning_tokens:
            raise ValueError(
                f"max_tokens_per_branch ({self.max_tokens_per_branch}) exceeds "
                f"max_reasoning_tokens ({self.max_reasoning_tokens}): not even one branch fits"
            )
        if self.strategy == "single_chain" and self.max_branches != 1:
            raise ValueError("strategy single_chain grows exactly one chain: set max_branches: 1")
        if self.strategy in TREE_STRATEGIES and self.beam_width > self.max_branches:
            raise ValueError(
                f"beam_width ({self.beam_width}) exceeds max_branches ({self.max_branches}): "
                "each kept node needs at least one proposal per round"
            )
        return self


class ModelConfig(_Strict):
    """The model every branch-generator serves.

    With `path: null`, `name` picks a named model shipped on PyPI (cluster/models.py); with a
    `path` to a local model directory, `name` is only the name the service answers to.
    """

    name: str = DEFAULT_MODEL
    path: str | None = None
    max_model_len: Annotated[int, Field(gt=0)] = 2048
    # auto: bfloat16 on GPUs; on CPUs the faster of float32 and bfloat16 for a named model as
    # measured (README, engine settings), float32 for a model.path.
    dtype: str = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # CPU: KV cache size in GiB (VLLM_CPU_KVCACHE_SPACE, read from the environment at start).
    cpu_kv_cache_gib: Annotated[int, Field(gt=0)] = 1
    # Further vLLM engine settings (AsyncEngineArgs keyword arguments, e.g. max_num_seqs,
    # enable_prefix_caching, gpu_memory_utilization), passed through as they are: vLLM
    # validates them when the engine starts.
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _model_is_known(self) -> ModelConfig:
        if self.path is None:
            named_model(self.name)  # raises with the list of named models
        return self

    @field_validator("engine_kwargs")
    @classmethod
    def _service_settings_stay_in_the_service(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        for key in sorted(kwargs):
            if key in SERVICE_ENGINE_SETTINGS:
                raise ValueError(
                    f"engine_kwargs.{key} is set by the service: use {SERVICE_ENGINE_SETTINGS[key]} instead"
                )
        return kwargs


# Engine settings the service derives from its own fields (the gateway counts tokens with the
# model's tokenizer and sizes prompts by max_model_len), so engine_kwargs may not set them.
SERVICE_ENGINE_SETTINGS = {
    "model": "model.name or model.path",
    "tokenizer": "model.path",
    "served_model_name": "model.name",
    "max_model_len": "model.max_model_len",
    "dtype": "model.dtype",
}


class TaskSettings(_Strict):
    """How chains of one task family are cut into steps for tree search."""

    # A step ends where the model writes this (the default: a blank line).
    step_delimiter: Annotated[str, Field(min_length=1)] = "\n\n"
    # Temperature of step proposals; None: the effort's. 0 proposes a node's steps greedily,
    # one engine call each, every call leaving out the steps proposed before it: the model's
    # own ranking of the next steps, in order.
    step_temperature: Annotated[float, Field(ge=0, le=2)] | None = None


# Task families whose step grammar leaves out the steps already proposed at a node.
GRAMMAR_TASKS = (TaskFamily.GAME24,)


def _default_tasks() -> dict[TaskFamily, TaskSettings]:
    # Game of 24 steps are one line each, held to their grammar by structured output, and
    # proposed greedily: sampled at the effort's temperature the model gets a step's
    # arithmetic wrong about twice as often (README, Game of 24).
    return {
        TaskFamily.GENERAL: TaskSettings(),
        TaskFamily.MATH: TaskSettings(step_delimiter="\n"),
        TaskFamily.GAME24: TaskSettings(step_delimiter="\n", step_temperature=0.0),
    }


class RedisConfig(_Strict):
    # None: the local cluster starts an embedded redis-server; REDIS_URL overrides both.
    url: str | None = None
    key_prefix: str = "rc"
    tree_ttl_s: Annotated[int, Field(gt=0)] = 24 * 3600
    # Safety net for trees whose planner died before finishing them.
    active_tree_ttl_s: Annotated[int, Field(gt=0)] = 3600
    # A planner renews its tree's lease every third of this; a dead one's tree can be resumed
    # by another planner once it has expired.
    lease_ttl_s: Annotated[float, Field(gt=0)] = 5.0


class DeploymentSettings(_Strict):
    num_replicas: Annotated[int, Field(ge=1)] = 1
    num_cpus: Annotated[float, Field(ge=0)] = 0.25
    num_gpus: Annotated[float, Field(ge=0)] = 0
    max_ongoing_requests: Annotated[int, Field(ge=1)] = 64


class AffinitySettings(_Strict):
    """Prefix-cache affinity routing of branch-generator calls (deployments/routing.py)."""

    # On: calls of one tree go to the replica its id hashes to, whose engine's prefix cache
    # holds the tree's prompt. Off: Serve's default router balances every call.
    enabled: bool = True
    # The tree's replica is passed over (power of two choices instead) once it queues more
    # than this many calls beyond the least-loaded replica: the engine batches concurrent
    # calls, so a few extra cost less than prefilling the prompt again elsewhere.
    max_imbalance: Annotated[int, Field(ge=0)] = 16


class DeploymentsConfig(_Strict):
    gateway: DeploymentSettings = DeploymentSettings()
    planner: DeploymentSettings = DeploymentSettings()
    generator: DeploymentSettings = DeploymentSettings(num_cpus=1, max_ongoing_requests=256)
    verifier: DeploymentSettings = DeploymentSettings()
    generator_affinity: AffinitySettings = AffinitySettings()


class TenantConfig(_Strict):
    api_key: str
    # The highest effort this tenant may ask for; requests may lower it, never raise it.
    max_effort: Effort = Effort.HIGH


class AuthConfig(_Strict):
    # No tenants configured: the service is open and every caller is tenant "anonymous".
    tenants: dict[str, TenantConfig] = {}
    # Keys that may read every tenant's trees.
    ops_api_keys: tuple[str, ...] = ()


class HttpConfig(_Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(gt=0, lt=65536)] = 8000
    # Prometheus endpoint of Ray's metrics agent (every deployment's metrics); null: a free port.
    metrics_port: Annotated[int, Field(gt=0, lt=65536)] | None = None
    max_request_bytes: Annotated[int, Field(gt=0)] = 1 << 20


class ScalingSettings(_Strict):
    """Autoscaling bounds and pacing of one deployment (see docs/autoscale.md)."""

    min_replicas: Annotated[int, Field(ge=0)] = 1
    max_replicas: Annotated[int, Field(ge=1)] = 1
    # Fraction of a replica's capacity the policy plans to use; the rest absorbs bursts.
    target_utilization: Annotated[float, Field(gt=0, le=1)] = 0.8
    # How long a wish to scale must persist before it is acted on.
    upscale_delay_s: Annotated[float, Field(ge=0)] = 0.0
    downscale_delay_s: Annotated[float, Field(ge=0)] = 60.0
    # Idle time before the last replica goes (only with min_replicas: 0); None: downscale_delay_s.
    scale_to_zero_delay_s: Annotated[float, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _bounds_are_consistent(self) -> ScalingSettings:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas}): "
                "raise max_replicas or lower min_replicas"
            )
        if self.scale_to_zero_delay_s is not None and self.min_replicas != 0:
            raise ValueError(
                "scale_to_zero_delay_s only applies with min_replicas: 0 "
                f"(min_replicas is {self.min_replicas})"
            )
        return self


class GeneratorScaling(ScalingSettings):
    # Used only until a replica has measured its own engine throughput (tokens/s).
    prior_tokens_per_s: Annotated[float, Field(gt=0)] = 100.0
    # The batch (sequences) a replica's throughput is extrapolated to until it is measured
    # compute-bound; None: the engine's own max_num_seqs.
    max_seqs: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _generators_never_scale_to_zero(self) -> GeneratorScaling:
        if self.min_replicas < 1:
            raise ValueError(
                "generator.min_replicas must be at least 1: an engine takes tens of seconds to start "
                "and the verifier's judge needs one"
            )
        return self


class VerifierScaling(ScalingSettings):
    # Pending verifications one replica is sized for.
    verifications_per_replica: Annotated[float, Field(gt=0)] = 16.0


class PlannerScaling(ScalingSettings):
    # Trees one planner replica runs at once.
    trees_per_replica: Annotated[float, Field(gt=0)] = 32.0


class AutoscalingSettings(_Strict):
    """Effort-budget autoscaling of the worker deployments (package `autoscale`)."""

    enabled: bool = False
    # Window over which Serve averages the metrics replicas report.
    look_back_period_s: Annotated[float, Field(gt=0)] = 10.0
    # Remaining-time floor when turning tokens left into tokens per second, so a tree at its
    # deadline asks for a lot of capacity, not for infinite capacity.
    min_slack_s: Annotated[float, Field(gt=0)] = 2.0
    generator: GeneratorScaling = GeneratorScaling(max_replicas=4)
    verifier: VerifierScaling = VerifierScaling(min_replicas=0, max_replicas=4, scale_to_zero_delay_s=300)
    planner: PlannerScaling = PlannerScaling(max_replicas=4)


OverloadAction = Literal["degrade", "queue", "reject"]


class AdmissionSettings(_Strict):
    """Per-tenant ceilings on reasoning tokens in flight, and what to do under overload."""

    enabled: bool = False
    # Ceiling on the reasoning tokens a tenant may have in flight; None: no ceiling.
    default_max_tokens_in_flight: Annotated[int, Field(gt=0)] | None = None
    # Per-tenant ceilings (tenant names from auth.tenants, or "anonymous" for an open service).
    tenant_max_tokens_in_flight: dict[str, Annotated[int, Field(gt=0)]] = {}
    # When the ceiling is reached or the projected wait would miss the deadline.
    on_overload: OverloadAction = "degrade"
    # queue: the longest a request waits for room before it is rejected with 429.
    max_queue_wait_s: Annotated[float, Field(gt=0)] = 30.0
    queue_poll_s: Annotated[float, Field(gt=0)] = 0.25
    # Registrations left by a dead gateway are dropped this long after their deadline.
    stale_after_deadline_s: Annotated[float, Field(gt=0)] = 60.0
    # Smallest and largest Retry-After the gateway sends.
    min_retry_after_s: Annotated[int, Field(ge=1)] = 1
    max_retry_after_s: Annotated[int, Field(ge=1)] = 600

    def ceiling_for(self, tenant: str) -> int | None:
        return self.tenant_max_tokens_in_flight.get(tenant, self.default_max_tokens_in_flight)

    @model_validator(mode="after")
    def _retry_bounds(self) -> AdmissionSettings:
        if self.max_retry_after_s < self.min_retry_after_s:
            raise ValueError(
                f"max_retry_after_s ({self.max_retry_after_s}) is below min_retry_after_s "
                f"({self.min_retry_after_s})"
            )
        return self


class ClusterConfig(_Strict):
    model: ModelConfig = ModelConfig()
    redis: RedisConfig = RedisConfig()
    efforts: dict[Effort, EffortBudget]
    default_effort: Effort = Effort.MEDIUM
    tasks: dict[TaskFamily, TaskSettings] = Field(default_factory=_default_tasks)
    deployments: DeploymentsConfig = DeploymentsConfig()
    auth: AuthConfig = AuthConfig()
    http: HttpConfig = HttpConfig()
    autoscaling: AutoscalingSettings = AutoscalingSettings()
    admission: AdmissionSettings = AdmissionSettings()

    @field_validator("efforts")
    @classmethod
    def _every_effort_has_a_budget(cls, efforts: dict[Effort, EffortBudget]) -> dict[Effort, EffortBudget]:
        missing = [e.value for e in Effort if e not in efforts]
        if missing:
            raise ValueError(f"efforts: no budget for {', '.join(missing)}; every effort needs one")
        return efforts

    @field_validator("tasks", mode="before")
    @classmethod
    def _over_the_defaults(cls, tasks: Any) -> Any:
        """A config that sets one field of one family keeps the other defaults."""
        if not isinstance(tasks, dict):
            return tasks
        defaults = {task.value: settings.model_dump() for task, settings in _default_tasks().items()}
        return _deep_merge(defaults, tasks)

    @field_validator("tasks")
    @classmethod
    def _greedy_steps_need_a_grammar(
        cls, tasks: dict[TaskFamily, TaskSettings]
    ) -> dict[TaskFamily, TaskSettings]:
        greedy = sorted(
            task.value
            for task, settings in tasks.items()
            if settings.step_temperature == 0 and task not in GRAMMAR_TASKS
        )
        if greedy:
            raise ValueError(
                f"tasks.{greedy[0]}.step_temperature 0 would propose the same step every time: only "
                f"{', '.join(t.value for t in GRAMMAR_TASKS)} steps have a grammar that leaves out the "
                "steps proposed before; use a temperature above 0 or leave it unset"
            )
        return tasks

    @model_validator(mode="after")
    def _admission_names_known_tenants(self) -> ClusterConfig:
        known = set(self.auth.tenants) or {"anonymous"}
        unknown = sorted(set(self.admission.tenant_max_tokens_in_flight) - known)
        if unknown:
            raise ValueError(
                f"admission.tenant_max_tokens_in_flight names unknown tenant(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        largest = max(budget.max_reasoning_tokens for budget in self.efforts.values())
        smallest = min(budget.max_reasoning_tokens for budget in self.efforts.values())
        admission = self.admission
        ceilings = [admission.default_max_tokens_in_flight, *admission.tenant_max_tokens_in_flight.values()]
        for ceiling in ceilings:
            if ceiling is not None and ceiling < smallest:
                raise ValueError(
                    f"an admission ceiling of {ceiling} tokens admits no request: the smallest effort "
                    f"budget is {smallest} tokens (the largest {largest})"
                )
        return self

    def budget_for(self, effort: Effort) -> EffortBudget:
        return self.efforts[effort]

    def task_settings(self, task: TaskFamily) -> TaskSettings:
        return self.tasks.get(task, TaskSettings())

    def with_overrides(self, overrides: dict[str, Any]) -> ClusterConfig:
        """A copy with nested fields replaced, validated again (CLI flags, tests)."""
        return ClusterConfig.model_validate(_deep_merge(self.model_dump(mode="json"), overrides))


def _deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | Path | None = None) -> ClusterConfig:
    """Read a YAML config (the shipped default when `path` is None); REDIS_URL overrides."""
    source = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    try:
        raw = yaml.safe_load(source.read_text()) or {}
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"config file {source} does not exist") from exc
    config = ClusterConfig.model_validate(raw)
    redis_url = os.environ.get("REDIS_URL")
    if redis_url:
        config = config.with_overrides({"redis": {"url": redis_url}})
    return config
