"""The application builder: Serve YAML and Python build the same Application from config."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from ray.serve import Application
from ray.serve.schema import ServeDeploySchema

from cluster.config import ClusterConfig, load_config
from deployments.builder import app_builder, build_app
from deployments.routing import AFFINITY_ROUTER

pytestmark = pytest.mark.unit

SERVE_YAML = Path(__file__).parents[2] / "configs" / "serve.yaml"


def _deployments(app: Application) -> dict[str, dict[str, Any]]:
    """Every deployment bound into the application graph, with what config decides."""
    found: dict[str, dict[str, Any]] = {}
    pending = [app]
    while pending:
        deployment = pending.pop()._bound_deployment
        found[deployment.name] = {
            "num_replicas": deployment.num_replicas,
            "max_ongoing_requests": deployment.max_ongoing_requests,
            "ray_actor_options": deployment.ray_actor_options,
            "request_router": deployment._deployment_config.request_router_config,
        }
        pending += [arg for arg in deployment.init_args if isinstance(arg, Application)]
    return found


def test_yaml_and_python_build_the_same_application() -> None:
    schema = ServeDeploySchema.model_validate(yaml.safe_load(SERVE_YAML.read_text()))
    (entry,) = schema.applications
    assert entry.import_path == "deployments.builder:app_builder"
    from_yaml = _deployments(app_builder(entry.args))
    config = load_config().with_overrides({"redis": {"url": "redis://127.0.0.1:6379/0"}})
    assert from_yaml == _deployments(build_app(config))
    assert set(from_yaml) == {"Gateway", "JobRunner", "Planner", "Verifier", "BranchGenerator"}


def test_replicas_and_resources_come_from_config() -> None:
    config = load_config().with_overrides(
        {
            "redis": {"url": "redis://r:1/0"},
            "deployments": {"generator": {"num_replicas": 3, "num_cpus": 2}, "verifier": {"num_replicas": 2}},
        }
    )
    deployments = _deployments(build_app(config))
    generator = deployments["BranchGenerator"]
    assert generator["num_replicas"] == 3
    assert generator["ray_actor_options"]["num_cpus"] == 2
    assert "VLLM_CPU_KVCACHE_SPACE" in generator["ray_actor_options"]["runtime_env"]["env_vars"]
    assert deployments["Verifier"]["num_replicas"] == 2


def test_gpu_generators_ask_for_a_gpu() -> None:
    config: ClusterConfig = load_config().with_overrides({"model": {"device": "cuda"}})
    generator = _deployments(build_app(config))["BranchGenerator"]
    assert generator["ray_actor_options"]["num_gpus"] == 1
    assert "runtime_env" not in generator["ray_actor_options"]


def test_generators_route_by_tree_affinity_unless_disabled() -> None:
    config = load_config().with_overrides({"deployments": {"generator_affinity": {"max_imbalance": 3}}})
    deployments = _deployments(build_app(config))
    router = deployments["BranchGenerator"]["request_router"]
    assert router.request_router_class == AFFINITY_ROUTER
    assert router.request_router_kwargs == {"max_imbalance": 3}
    assert deployments["Verifier"]["request_router"].is_default_request_router()
    off = load_config().with_overrides({"deployments": {"generator_affinity": {"enabled": False}}})
    assert _deployments(build_app(off))["BranchGenerator"]["request_router"].is_default_request_router()


def test_builder_args_refuse_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="config_paht"):
        app_builder({"config_paht": "x.yaml"})


def test_the_generator_deployment_name_is_the_one_the_gateway_watches() -> None:
    from deployments.builder import _deployment
    from deployments.workers import GENERATOR_DEPLOYMENT, BranchGenerator

    assert _deployment(BranchGenerator).name == GENERATOR_DEPLOYMENT


def test_serve_options_in_config_reach_the_deployment() -> None:
    config = load_config().with_overrides(
        {
            "deployments": {
                "gateway": {
                    "num_replicas": "auto",
                    "autoscaling_config": {"min_replicas": 2, "max_replicas": 5},
                    "health_check_period_s": 7,
                    "graceful_shutdown_timeout_s": 40,
                    "ray_actor_options": {"memory": 2**30},
                },
                "generator": {"ray_actor_options": {"runtime_env": {"env_vars": {"EXTRA": "1"}}}},
            }
        }
    )
    app = build_app(config)
    gateway = app._bound_deployment
    deployment_config = gateway._deployment_config
    assert deployment_config.health_check_period_s == 7
    assert deployment_config.graceful_shutdown_timeout_s == 40
    autoscaling = deployment_config.autoscaling_config
    assert autoscaling is not None
    assert (autoscaling.min_replicas, autoscaling.max_replicas) == (2, 5)
    assert gateway.ray_actor_options["memory"] == 2**30
    assert gateway.ray_actor_options["num_cpus"] == config.deployments.gateway.num_cpus
    generator = _deployments(app)["BranchGenerator"]["ray_actor_options"]
    # The engine's own environment joins the one passed through.
    assert generator["runtime_env"]["env_vars"]["EXTRA"] == "1"
    assert "VLLM_CPU_KVCACHE_SPACE" in generator["runtime_env"]["env_vars"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"health_check_perod_s": 5},
            "deployments.verifier.health_check_perod_s is not a Serve deployment option "
            "(did you mean health_check_period_s?)",
        ),
        ({"health_check_period_s": -1}, "deployments.verifier: Serve refused these options"),
        (
            {"autoscaling_config": {"min_replicas": 3, "max_replicas": 1}},
            "deployments.verifier: Serve refused these options",
        ),
    ],
)
def test_bad_serve_options_are_refused_naming_the_deployment(options: dict[str, Any], message: str) -> None:
    config = load_config().with_overrides({"deployments": {"verifier": options}})
    with pytest.raises(ValueError, match=re.escape(message)):
        build_app(config)
