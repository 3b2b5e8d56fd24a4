"""One configuration object for the whole cluster, loaded from YAML and passed down.

Operators edit the YAML (or Helm values that render it); every deployment receives the
same validated `ClusterConfig`, so there are no module-level settings anywhere else.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    SerializationInfo,
    StringConstraints,
    field_validator,
    model_validator,
)

from cluster.models import DEFAULT_MODEL, named_model
from cluster.sandbox.settings import SandboxSettings
from cluster.types import Effort

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default_config.yaml")


class _Strict(BaseModel):
    # Unknown keys are almost always typos in an operator's YAML: refuse them loudly. Errors
    # never echo the input: a config error must not print a key hash or a URL into a log.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


# Passed as serialization context by `ClusterConfig.with_overrides`, which must round-trip
# secrets; every other dump (logs, reprs, JSON) shows them as '**********'.
REVEAL_SECRETS = {"reveal_secrets": True}


def _dump_secret(value: SecretStr, info: SerializationInfo) -> str:
    context = info.context or {}
    return value.get_secret_value() if context.get("reveal_secrets") else str(value)


def _key_hash(value: object) -> object:
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    if not isinstance(text, str) or re.fullmatch(r"[0-9a-f]{64}", text) is None:
        raise ValueError(
            "api_key_sha256 must be 64 lowercase hex digits, the SHA-256 of the key: "
            "`reasoning-cluster auth hash-key` prints it"
        )
    return text


# The SHA-256 of an API key, as `reasoning-cluster auth hash-key` prints it: the config holds
# no key, only what a key must hash to.
KeySha256 = Annotated[SecretStr, BeforeValidator(_key_hash), PlainSerializer(_dump_secret, when_used="json")]
# Tenant and ops names appear in tree owners, rate-limit keys and audit records.
IdentityName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


def _strategy_names() -> list[str]:
    # Imported when a config is validated, not when this module is: strategies import it.
    from cluster.search import strategy_names

    return strategy_names()


def _strategy_schema(schema: dict[str, Any]) -> None:
    schema["enum"] = _strategy_names()


def _verifiers_schema(schema: dict[str, Any]) -> None:
    from cluster.tasks import TASK_VERIFIERS
    from cluster.verifiers import known_verifiers

    schema["items"] = {"type": "string", "enum": [TASK_VERIFIERS, *known_verifiers()]}


class ScoringSettings(_Strict):
    """How verdicts become scores (cluster/search/scoring.py)."""

    # Share of a node's score that its step verdicts decide once its answer was judged.
    step_weight: Annotated[float, Field(ge=0, le=1)] = 0.1
    # How a path's score comes from its steps' own scores: the newest step's (`last`, which
    # judged the whole path), or the `min`, `mean` or `prod` of all of them.
    aggregation: Literal["last", "min", "mean", "prod"] = "last"


class EffortBudget(_Strict):
    """What one effort level may spend and how it searches."""

    # A registered search strategy (cluster/search/).
    strategy: Annotated[str, Field(json_schema_extra=_strategy_schema)]
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
    # Verifiers that score candidates, in order; `task` stands for the request's task family's
    # own (cluster/tasks/); a model judge only where no program can judge.
    verifiers: Annotated[tuple[str, ...], Field(json_schema_extra=_verifiers_schema)] = ("task",)
    # Tree search: nodes kept per round (beam search) or subtrees (DVTS: max_branches/beam_width).
    beam_width: Annotated[int, Field(gt=0, le=64)] = 4
    max_tokens_per_step: Annotated[int, Field(gt=0)] = 96
    # MCTS: weight of the prior (PUCT) against the mean value of a child.
    exploration: Annotated[float, Field(ge=0)] = 1.0
    # compute_optimal: short chains sampled first to estimate how hard the problem is.
    probe_branches: Annotated[int, Field(gt=0, le=64)] = 3
    probe_tokens_per_branch: Annotated[int, Field(gt=0)] = 128
    scoring: ScoringSettings = ScoringSettings()

    @field_validator("verifiers")
    @classmethod
    def _known_verifiers(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        from cluster.tasks import TASK_VERIFIERS
        from cluster.verifiers import known_verifiers

        known = [TASK_VERIFIERS, *known_verifiers()]
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(f"unknown verifier {unknown[0]!r}; known: {', '.join(known)}")
        return names

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, name: str) -> str:
        known = _strategy_names()
        if name not in known:
            raise ValueError(f"unknown strategy {name!r}; known: {', '.join(known)}")
        return name

    @model_validator(mode="after")
    def _branch_budget_is_reachable(self) -> EffortBudget:
        if self.max_tokens_per_branch > self.max_reasoning_tokens:
            raise ValueError(
                f"max_tokens_per_branch ({self.max_tokens_per_branch}) exceeds "
                f"max_reasoning_tokens ({self.max_reasoning_tokens}): not even one branch fits"
            )
        if self.strategy == "single_chain" and self.max_branches != 1:
            raise ValueError("strategy single_chain grows exactly one chain: set max_branches: 1")
        if _grows_tree(self.strategy) and self.beam_width > self.max_branches:
            raise ValueError(
                f"beam_width ({self.beam_width}) exceeds max_branches ({self.max_branches}): "
                "each kept node needs at least one proposal per round"
            )
        return self


def _grows_tree(strategy: str) -> bool:
    from cluster.search.base import strategy_class

    return strategy_class(strategy).grows_tree


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


def _default_tasks() -> dict[str, TaskSettings]:
    # Imported when a config is validated, not when this module is: task families import it.
    from cluster.tasks import get_task, task_names

    return {name: get_task(name).settings for name in task_names()}


class RedisConfig(_Strict):
    # None: the local cluster starts an embedded redis-server; REDIS_URL overrides both.
    # The URL carries no password: that is read from `password_file` (a mounted Secret).
    url: str | None = None
    password_file: Path | None = None
    key_prefix: str = "rc"
    tree_ttl_s: Annotated[int, Field(gt=0)] = 24 * 3600
    # Safety net for trees whose planner died before finishing them.
    active_tree_ttl_s: Annotated[int, Field(gt=0)] = 3600
    # A planner renews its tree's lease every third of this; a dead one's tree can be resumed
    # by another planner once it has expired.
    lease_ttl_s: Annotated[float, Field(gt=0)] = 5.0
    # Every client (gateway, planner, admission, demand probe) fails a command that Redis does
    # not answer within socket_timeout_s, and a connection not made within connect_timeout_s,
    # so a hung or dead Redis costs seconds, never a stuck request.
    socket_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    connect_timeout_s: Annotated[float, Field(gt=0)] = 2.0
    # Connections per client (one client per replica); a command waits at most pool_timeout_s
    # for a free one, then fails instead of queueing without bound.
    max_connections: Annotated[int, Field(ge=1)] = 64
    pool_timeout_s: Annotated[float, Field(gt=0)] = 2.0
    # Records kept in the audit stream of tree reads (`<key_prefix>:audit`, docs/security.md).
    audit_maxlen: Annotated[int, Field(ge=1)] = 100_000

    @field_validator("url")
    @classmethod
    def _no_password_in_url(cls, url: str | None) -> str | None:
        if url is not None and urlsplit(url).password is not None:
            raise ValueError(
                "redis.url carries a password; put the password in a file named by "
                "redis.password_file (a mounted Secret) and leave it out of the URL"
            )
        return url


# Serve deployment options the builder sets itself; a config may not pass them through.
BUILDER_OWNED_OPTIONS = frozenset({"name", "version", "func_or_class", "request_router_config"})


class DeploymentSettings(BaseModel):
    """One Serve deployment: its replicas and Ray resources, and any other option of Serve's
    `Deployment.options()` (health_check_period_s, graceful_shutdown_timeout_s,
    ray_actor_options, autoscaling_config with num_replicas: auto, ...). Those pass through as
    given and Serve validates them when the application is built (deployments/builder.py)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    num_replicas: Annotated[int, Field(ge=1)] | Literal["auto"] = 1
    num_cpus: Annotated[float, Field(ge=0)] = 0.25
    num_gpus: Annotated[float, Field(ge=0)] = 0
    max_ongoing_requests: Annotated[int, Field(ge=1)] = 64
    # Requests waiting for a replica beyond max_ongoing_requests; more are refused at once
    # (HTTP 503 at the proxy, a 503 from the gateway for its calls). -1: no bound.
    max_queued_requests: Annotated[int, Field(ge=-1)] = 1024

    @property
    def serve_options(self) -> dict[str, Any]:
        """The passed-through Serve options (everything beyond the four fields above)."""
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _passes_through_only_what_the_builder_leaves_open(self) -> DeploymentSettings:
        owned = sorted(BUILDER_OWNED_OPTIONS.intersection(self.serve_options))
        private = sorted(key for key in self.serve_options if key.startswith("_"))
        if owned or private:
            raise ValueError(f"{', '.join(owned + private)}: set by the application builder, not by config")
        actor = self.serve_options.get("ray_actor_options")
        if actor is not None and not isinstance(actor, dict):
            raise ValueError("ray_actor_options must be a mapping of Ray actor options")
        resources = sorted({"num_cpus", "num_gpus"}.intersection(actor or {}))
        if resources:
            raise ValueError(
                f"ray_actor_options.{resources[0]}: set {resources[0]} of the deployment itself "
                "(one level up), which the builder puts into ray_actor_options"
            )
        return self


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
    gateway: DeploymentSettings = DeploymentSettings(max_queued_requests=256)
    planner: DeploymentSettings = DeploymentSettings()
    generator: DeploymentSettings = DeploymentSettings(num_cpus=1, max_ongoing_requests=256)
    verifier: DeploymentSettings = DeploymentSettings()
    # Runs Responses API jobs (background ones included) detached from the gateway.
    runner: DeploymentSettings = DeploymentSettings()
    generator_affinity: AffinitySettings = AffinitySettings()


class TenantConfig(_Strict):
    api_key_sha256: KeySha256
    # The highest effort this tenant may ask for; requests may lower it, never raise it.
    max_effort: Effort = Effort.XHIGH


class OpsIdentity(_Strict):
    """A person or system that may read every tenant's trees; its reads are audited by name."""

    api_key_sha256: KeySha256


ANONYMOUS = "anonymous"


class AuthConfig(_Strict):
    # No tenants and no ops: every caller is tenant "anonymous", which only a loopback
    # listener allows unless allow_anonymous says otherwise (ClusterConfig checks it).
    tenants: dict[IdentityName, TenantConfig] = {}
    ops: dict[IdentityName, OpsIdentity] = {}
    allow_anonymous: bool = False

    @property
    def is_open(self) -> bool:
        return not self.tenants and not self.ops

    @model_validator(mode="after")
    def _one_identity_per_key(self) -> AuthConfig:
        if ANONYMOUS in self.tenants:
            raise ValueError(f"auth.tenants: {ANONYMOUS!r} is reserved for callers of an open service")
        owners: dict[str, str] = {}
        named = [(f"tenants.{n}", t.api_key_sha256) for n, t in self.tenants.items()]
        named += [(f"ops.{n}", o.api_key_sha256) for n, o in self.ops.items()]
        for name, digest in named:
            other = owners.setdefault(digest.get_secret_value(), name)
            if other != name:
                raise ValueError(f"auth.{other} and auth.{name} have the same key; each needs its own")
        return self


class HttpConfig(_Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(gt=0, lt=65536)] = 8000
    # Prometheus endpoint of Ray's metrics agent (every deployment's metrics); null: a free port.
    metrics_port: Annotated[int, Field(gt=0, lt=65536)] | None = None
    max_request_bytes: Annotated[int, Field(gt=0)] = 1 << 20
    # GET /v1/trees/{id}/events waits at most this long for a new event, and at most
    # max_event_waiters polls wait at once per gateway replica (the rest answer at once):
    # pollers never hold the gateway's request slots for long.
    events_wait_ms: Annotated[int, Field(ge=0, le=5000)] = 500
    max_event_waiters: Annotated[int, Field(ge=0)] = 16
    # Prompts waiting to be rendered and tokenised per gateway replica; more are a 503.
    max_prompts_waiting: Annotated[int, Field(ge=1)] = 32

    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class GrpcConfig(_Strict):
    """The gRPC API (cluster/rpc/reasoning.proto) through Ray Serve's gRPC proxy."""

    enabled: bool = True
    # Serve's gRPC proxy listens on every interface (the local cluster rebinds it to loopback);
    # while http.host is a loopback address the gateway answers loopback callers only.
    port: Annotated[int, Field(gt=0, lt=65536)] = 9000


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


class TracingConfig(_Strict):
    """OpenTelemetry request traces (cluster.tracing); off unless an endpoint is set."""

    # OTLP/HTTP traces URL, e.g. http://otel-collector:4318/v1/traces; None: no spans are sent.
    endpoint: str | None = None
    service_name: Annotated[str, Field(min_length=1)] = "reasoning-cluster"
    # Sent with every export (e.g. a collector's API key); never logged.
    headers: dict[str, str] = {}
    # Spans are batched and sent at least this often.
    export_delay_ms: Annotated[int, Field(gt=0)] = 1000

    @field_validator("endpoint")
    @classmethod
    def _is_an_http_url(cls, endpoint: str | None) -> str | None:
        if endpoint is not None and not endpoint.startswith(("http://", "https://")):
            raise ValueError(
                f"tracing.endpoint must be an OTLP/HTTP URL such as http://collector:4318/v1/traces, "
                f"not {endpoint!r}"
            )
        return endpoint


OverloadAction = Literal["degrade", "queue", "reject"]


class RateLimit(_Strict):
    """A token bucket: `per_s` sustained, up to `burst` at once."""

    per_s: Annotated[float, Field(gt=0)]
    burst: Annotated[int, Field(ge=1)]


class RateLimitSettings(_Strict):
    """Per-caller request rates (token buckets in Redis shared by every gateway replica).

    They apply whether or not admission control is enabled: they bound how often a caller may
    knock, admission bounds what the admitted requests may spend.
    """

    enabled: bool = True
    # POST /v1/chat/completions per tenant (every ops identity on its own).
    requests: RateLimit = RateLimit(per_s=10, burst=60)
    # GET /v1/trees/... per caller: progress polls are cheap but frequent.
    reads: RateLimit = RateLimit(per_s=50, burst=200)
    # Per-tenant request limits that replace `requests` (tenant names from auth.tenants).
    tenant_requests: dict[str, RateLimit] = {}


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
    # queue: requests waiting at once, cluster-wide; beyond it a request is rejected with 429.
    max_queued: Annotated[int, Field(ge=0)] = 256
    queue_poll_s: Annotated[float, Field(gt=0)] = 0.25
    # Registrations left by a dead gateway are dropped this long after their deadline.
    stale_after_deadline_s: Annotated[float, Field(gt=0)] = 60.0
    # Smallest and largest Retry-After the gateway sends.
    min_retry_after_s: Annotated[int, Field(ge=1)] = 1
    max_retry_after_s: Annotated[int, Field(ge=1)] = 600
    rate_limits: RateLimitSettings = RateLimitSettings()

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
    # Step settings per task family (`cluster/tasks/`); a family left out keeps its own defaults.
    tasks: dict[str, TaskSettings] = Field(default_factory=_default_tasks)
    deployments: DeploymentsConfig = DeploymentsConfig()
    auth: AuthConfig = AuthConfig()
    http: HttpConfig = HttpConfig()
    grpc: GrpcConfig = GrpcConfig()
    autoscaling: AutoscalingSettings = AutoscalingSettings()
    admission: AdmissionSettings = AdmissionSettings()
    # Limits of the sandbox that runs model-written Python (program verifiers).
    sandbox: SandboxSettings = SandboxSettings()
    tracing: TracingConfig = TracingConfig()

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
        defaults = {name: settings.model_dump() for name, settings in _default_tasks().items()}
        return _deep_merge(defaults, tasks)

    @field_validator("tasks")
    @classmethod
    def _known_families_and_greedy_steps(cls, tasks: dict[str, TaskSettings]) -> dict[str, TaskSettings]:
        from cluster.tasks import get_task, task_names

        unknown = sorted(set(tasks) - set(task_names()))
        if unknown:
            raise ValueError(f"tasks: unknown task family {unknown[0]!r}; known: {', '.join(task_names())}")
        greedy = sorted(
            name
            for name, settings in tasks.items()
            if settings.step_temperature == 0 and not get_task(name).excludes_tried_steps
        )
        if greedy:
            with_grammar = [name for name in task_names() if get_task(name).excludes_tried_steps]
            raise ValueError(
                f"tasks.{greedy[0]}.step_temperature 0 would propose the same step every time: only "
                f"{', '.join(with_grammar)} steps have a grammar that leaves out the "
                "steps proposed before; use a temperature above 0 or leave it unset"
            )
        return tasks

    @model_validator(mode="after")
    def _app_autoscaling_owns_its_replicas(self) -> ClusterConfig:
        if not self.autoscaling.enabled:
            return self
        for name in ("generator", "verifier", "planner"):
            settings: DeploymentSettings = getattr(self.deployments, name)
            if "autoscaling_config" in settings.serve_options or settings.num_replicas == "auto":
                raise ValueError(
                    f"deployments.{name}: autoscaling.enabled lets the app's effort-budget policy "
                    f"scale the {name}; set its bounds in autoscaling.{name} and remove "
                    "autoscaling_config / num_replicas: auto here"
                )
        return self

    @model_validator(mode="after")
    def _closed_unless_loopback(self) -> ClusterConfig:
        auth = self.auth
        if auth.is_open and not auth.allow_anonymous and not self.http.is_loopback():
            raise ValueError(
                f"http.host {self.http.host!r} is not a loopback address and auth has no tenants: "
                "anyone who can reach it could use the service and read every tree. Configure "
                "auth.tenants (and auth.ops), or set auth.allow_anonymous: true to serve it open"
            )
        return self

    @model_validator(mode="after")
    def _admission_names_known_tenants(self) -> ClusterConfig:
        known = set(self.auth.tenants) or {ANONYMOUS}
        admission = self.admission
        per_tenant: dict[str, Mapping[str, object]] = {
            "tenant_max_tokens_in_flight": admission.tenant_max_tokens_in_flight,
            "rate_limits.tenant_requests": admission.rate_limits.tenant_requests,
        }
        for field, named in per_tenant.items():
            unknown = sorted(set(named) - known)
            if unknown:
                raise ValueError(
                    f"admission.{field} names unknown tenant(s) {', '.join(unknown)}; "
                    f"known: {', '.join(sorted(known))}"
                )
        largest = max(budget.max_reasoning_tokens for budget in self.efforts.values())
        smallest = min(budget.max_reasoning_tokens for budget in self.efforts.values())
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

    def task_settings(self, task: str) -> TaskSettings:
        return self.tasks[task]

    def with_overrides(self, overrides: dict[str, Any]) -> ClusterConfig:
        """A copy with nested fields replaced, validated again (CLI flags, tests)."""
        current = self.model_dump(mode="json", context=REVEAL_SECRETS)
        return ClusterConfig.model_validate(_deep_merge(current, overrides))


# Keys whose values are key material or passwords, wherever they appear (api_key,
# api_key_sha256, ops_api_keys, password, token, secret); `..._file`/`..._path` name a file.
_SECRET_KEY = re.compile(r"(^|_)(api_keys?|password|secret|token)(_(?!file$|path$)|$)")
REDACTED = "<redacted>"


def redacted_data(config: ClusterConfig) -> dict[str, Any]:
    """The config as plain data for display (`reasoning-cluster config show`): keys, hashes
    and passwords replaced, a URL's password removed. Pydantic's SecretStr fields already dump
    masked."""
    return _redact(config.model_dump(mode="json"))


def _redact(node: Any, key: str = "") -> Any:
    if _SECRET_KEY.search(key) and node not in (None, "", [], {}):
        return REDACTED
    if isinstance(node, dict):
        return {name: _redact(value, str(name)) for name, value in node.items()}
    if isinstance(node, list):
        return [_redact(item, key) for item in node]
    if isinstance(node, str) and "://" in node:
        url = urlsplit(node)
        if url.password is not None:
            host = url.hostname or ""
            netloc = f"{url.username or ''}:{REDACTED}@{host}" + (f":{url.port}" if url.port else "")
            return urlunsplit(url._replace(netloc=netloc))
    return node


def _deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | Path | None = None) -> ClusterConfig:
    """The packaged defaults, with the YAML file at `path` merged over them; REDIS_URL overrides.

    A file says only what it changes: mappings merge key by key (`efforts.high.strategy` alone
    keeps the rest of the high budget), lists and plain values replace the default's.
    """
    return ClusterConfig.model_validate(_merged_config_data(path))


def _merged_config_data(path: str | Path | None = None) -> dict[str, Any]:
    """The raw mapping `load_config` validates: defaults, the file over them, REDIS_URL."""
    data = _read_yaml_mapping(DEFAULT_CONFIG_PATH)
    if path is not None:
        data = _deep_merge(data, _read_yaml_mapping(Path(path)))
    redis_url = os.environ.get("REDIS_URL")
    if redis_url:
        data = _deep_merge(data, {"redis": {"url": redis_url}})
    return data


def _read_yaml_mapping(source: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(source.read_text()) or {}
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"config file {source} does not exist") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"config file {source} must hold a mapping of sections, not {type(raw).__name__}")
    return raw
