"""The application builder: Python and Serve YAML configs build the same `Application`.

Python:  serve.run(build_app(load_config("my.yaml")))
YAML:    applications: [{import_path: deployments.builder:app_builder,
                         args: {config_path: my.yaml}}]
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

from pydantic import BaseModel, ConfigDict
from ray.serve import Application, Deployment

from cluster.config import (
    AffinitySettings,
    ClusterConfig,
    DeploymentSettings,
    ScalingSettings,
    load_config,
)
from cluster.engine.vllm_engine import cpu_engine_env, use_cuda
from deployments.gateway import Gateway
from deployments.jobs import JobRunner
from deployments.routing import AFFINITY_ROUTER
from deployments.workers import BranchGenerator, Planner, Verifier


class AppBuilderArgs(BaseModel):
    """The `args` of a Serve YAML application entry."""

    model_config = ConfigDict(extra="forbid")

    config_path: str | None = None
    # Nested overrides applied on top of the file, e.g. {"redis": {"url": "redis://..."}}.
    overrides: dict[str, Any] = {}


def app_builder(args: dict[str, Any]) -> Application:
    parsed = AppBuilderArgs.model_validate(args)
    config = load_config(parsed.config_path)
    if parsed.overrides:
        config = config.with_overrides(parsed.overrides)
    return build_app(config)


def build_app(config: ClusterConfig, generator_deployment: object = BranchGenerator) -> Application:
    """The Serve application; `generator_deployment` replaces the vLLM branch-generator (tests
    pass one with a scripted engine, whose timing they control)."""
    settings = config.deployments
    scaling = _autoscaling_options(config)
    generator = _configured(
        generator_deployment, "generator", {**_generator_options(config), **scaling["generator"]}
    ).bind(config)
    verifier = _configured(Verifier, "verifier", {**_options(settings.verifier), **scaling["verifier"]}).bind(
        config, generator
    )
    planner = _configured(Planner, "planner", {**_options(settings.planner), **scaling["planner"]}).bind(
        config, generator, verifier
    )
    runner = _configured(JobRunner, "runner", _options(settings.runner)).bind(config, planner)
    return _configured(Gateway, "gateway", _options(settings.gateway)).bind(
        config, planner, generator, verifier, runner
    )


def _configured(decorated: object, name: str, options: dict[str, Any]) -> Deployment:
    """The deployment with its options, or an error naming the config section Serve refused."""
    deployment = _deployment(decorated)
    unknown = sorted(set(options) - SERVE_OPTIONS)
    if unknown:
        close = difflib.get_close_matches(unknown[0], SERVE_OPTIONS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"deployments.{name}.{unknown[0]} is not a Serve deployment option{hint}")
    try:
        return deployment.options(**options)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"deployments.{name}: Serve refused these options: {exc}") from exc


def _deployment(decorated: object) -> Deployment:
    # `@serve.deployment` returns a Deployment, which type checkers see as the class.
    if not isinstance(decorated, Deployment):
        raise TypeError(f"{decorated!r} is not a Serve deployment")
    return decorated


# What `Deployment.options()` accepts, public names only: config passes these through.
SERVE_OPTIONS = frozenset(
    name
    for name in inspect.signature(Deployment.options).parameters
    if name != "self" and not name.startswith("_")
)


def _options(settings: DeploymentSettings, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Serve options of one deployment: the config's own fields and its passed-through options."""
    passed = settings.serve_options
    actor: dict[str, Any] = {
        **passed.pop("ray_actor_options", {}),
        "num_cpus": settings.num_cpus,
        "num_gpus": settings.num_gpus,
    }
    if env:
        runtime_env = dict(actor.get("runtime_env") or {})
        runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **env}
        actor["runtime_env"] = runtime_env
    return {
        **passed,
        "num_replicas": settings.num_replicas,
        "max_ongoing_requests": settings.max_ongoing_requests,
        "max_queued_requests": settings.max_queued_requests,
        "ray_actor_options": actor,
    }


# Serve's own policy wrapper (upscale/downscale delays, bounds) runs around ours; its delays
# are 0 so the delays in `autoscale.policies` (driven by config) are the only ones.
AUTOSCALING_POLICIES = {
    "generator": "autoscale.policies:GeneratorPolicy",
    "verifier": "autoscale.policies:VerifierPolicy",
    "planner": "autoscale.policies:PlannerPolicy",
}


def _autoscaling_options(config: ClusterConfig) -> dict[str, dict[str, Any]]:
    """Per deployment: {} (fixed num_replicas) or the Serve autoscaling config of our policy."""
    auto = config.autoscaling
    if not auto.enabled:
        return {name: {} for name in AUTOSCALING_POLICIES}
    chosen: dict[str, ScalingSettings] = {
        "generator": auto.generator,
        "verifier": auto.verifier,
        "planner": auto.planner,
    }
    return {
        name: {
            "num_replicas": None,
            "autoscaling_config": {
                "min_replicas": settings.min_replicas,
                "initial_replicas": max(settings.min_replicas, 1),
                "max_replicas": settings.max_replicas,
                "look_back_period_s": auto.look_back_period_s,
                "metrics_interval_s": auto.look_back_period_s / 2,
                "upscale_delay_s": 0.0,
                "downscale_delay_s": 0.0,
                "downscale_to_zero_delay_s": 0.0,
                "policy": {
                    "policy_function": AUTOSCALING_POLICIES[name],
                    "policy_kwargs": settings.model_dump(mode="json"),
                },
            },
        }
        for name, settings in chosen.items()
    }


# Serve replaces a replica after three failed health checks in a row: a dead engine is found
# within seconds instead of half a minute (Serve's default period is 10 s).
GENERATOR_HEALTH_CHECK_PERIOD_S = 2.0


def _generator_options(config: ClusterConfig) -> dict[str, Any]:
    settings = config.deployments.generator
    routing = _affinity_routing(config.deployments.generator_affinity)
    if use_cuda(config.model):
        # One engine per GPU: vLLM takes the whole device it is given.
        options = _options(settings.model_copy(update={"num_gpus": max(settings.num_gpus, 1)}))
    else:
        # Ray limits a CPU actor's threads to its num_cpus; the engine sets its own.
        options = _options(settings, env=cpu_engine_env(config.model))
    options.setdefault("health_check_period_s", GENERATOR_HEALTH_CHECK_PERIOD_S)
    return {**options, **routing}


def _affinity_routing(settings: AffinitySettings) -> dict[str, Any]:
    """The generator's Serve request router: by tree affinity, or Serve's default ({})."""
    if not settings.enabled:
        return {}
    return {
        "request_router_config": {
            "request_router_class": AFFINITY_ROUTER,
            "request_router_kwargs": {"max_imbalance": settings.max_imbalance},
        }
    }
