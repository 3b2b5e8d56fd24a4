"""Autoscaling policies on constructed inputs and contexts: exact decisions, reasons, bounds, delays."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from ray.serve._private.common import DeploymentID, ReplicaID
from ray.serve.autoscaling_policy import _apply_autoscaling_config
from ray.serve.config import AutoscalingConfig, AutoscalingContext

from autoscale.policies import (
    LAST_DECISION_KEY,
    GeneratorPolicy,
    PlannerPolicy,
    VerifierPolicy,
    decision_metrics,
    generator_decision,
    planner_decision,
    replicas_for,
    verifier_decision,
)
from cluster.config import GeneratorScaling, PlannerScaling, VerifierScaling, load_config
from deployments.builder import _autoscaling_options

pytestmark = pytest.mark.unit


def test_replicas_for_rounds_up_at_target_utilisation() -> None:
    assert replicas_for(0, 100, 0.8) == 0
    assert replicas_for(80, 100, 0.8) == 1
    assert replicas_for(80.01, 100, 0.8) == 2
    assert replicas_for(1200, 500, 0.8) == 3


def test_generator_scales_up_on_measured_throughput_with_reason() -> None:
    settings = GeneratorScaling(min_replicas=1, max_replicas=8, target_utilization=0.8)
    state: dict[str, Any] = {}
    decision = generator_decision(1200.0, 500.0, 1, settings, now=100.0, state=state)
    assert (decision.replicas, decision.desired, decision.current) == (3, 3, 1)
    assert decision.demand == 1200.0 and decision.capacity_per_replica == 500.0
    assert decision.reason == (
        "scale up 1->3: demand 1200 tokens/s, capacity 500 tokens/s per replica (measured) at 80% "
        "target -> 3 needed"
    )
    assert state[LAST_DECISION_KEY]["replicas"] == 3
    assert decision_metrics(state) == {
        "replicas": 3.0,
        "desired": 3.0,
        "demand": 1200.0,
        "capacity_per_replica": 500.0,
        "target_utilization": 0.8,
    }


def test_generator_uses_the_prior_until_a_replica_has_measured() -> None:
    settings = GeneratorScaling(max_replicas=8, prior_tokens_per_s=100.0, target_utilization=0.5)
    decision = generator_decision(120.0, None, 1, settings, now=0.0, state={})
    assert decision.replicas == 3
    assert "capacity 100 tokens/s per replica (prior: nothing measured yet)" in decision.reason


def test_bounds_cap_and_raise() -> None:
    settings = GeneratorScaling(min_replicas=2, max_replicas=4, target_utilization=1.0)
    high = generator_decision(10_000.0, 100.0, 2, settings, now=0.0, state={})
    assert high.replicas == 4 and "100 needed (capped at max_replicas 4)" in high.reason
    low = generator_decision(0.0, 100.0, 4, settings, now=0.0, state={})
    assert low.desired == 2 and "0 needed (raised to min_replicas 2)" in low.reason


def test_upscale_delay_holds_then_acts() -> None:
    settings = GeneratorScaling(max_replicas=8, target_utilization=1.0, upscale_delay_s=10.0)
    state: dict[str, Any] = {}
    first = generator_decision(300.0, 100.0, 1, settings, now=0.0, state=state)
    assert first.replicas == 1 and first.desired == 3
    assert first.reason.endswith("; holding 1 (scale up to 3 waits 0.0/10 s)")
    assert generator_decision(300.0, 100.0, 1, settings, now=9.0, state=state).replicas == 1
    acted = generator_decision(300.0, 100.0, 1, settings, now=10.0, state=state)
    assert acted.replicas == 3 and acted.reason.startswith("scale up 1->3")


def test_downscale_delay_restarts_when_the_wish_changes() -> None:
    settings = GeneratorScaling(max_replicas=8, target_utilization=1.0, downscale_delay_s=30.0)
    state: dict[str, Any] = {}
    assert generator_decision(100.0, 100.0, 4, settings, now=0.0, state=state).replicas == 4
    # Demand comes back at t=20: the pending downscale is forgotten.
    assert generator_decision(400.0, 100.0, 4, settings, now=20.0, state=state).replicas == 4
    assert generator_decision(100.0, 100.0, 4, settings, now=25.0, state=state).replicas == 4
    assert generator_decision(100.0, 100.0, 4, settings, now=50.0, state=state).replicas == 4
    assert generator_decision(100.0, 100.0, 4, settings, now=55.0, state=state).replicas == 1


def test_verifiers_scale_to_zero_after_the_idle_delay() -> None:
    settings = VerifierScaling(
        min_replicas=0,
        max_replicas=4,
        verifications_per_replica=8,
        target_utilization=1.0,
        downscale_delay_s=5.0,
        scale_to_zero_delay_s=30.0,
    )
    state: dict[str, Any] = {}
    assert verifier_decision(20, 1, settings, now=0.0, state=state).replicas == 3
    # 3 -> 1 after the ordinary downscale delay, then 1 -> 0 only after the idle delay.
    assert verifier_decision(4, 3, settings, now=1.0, state=state).replicas == 3
    assert verifier_decision(4, 3, settings, now=6.0, state=state).replicas == 1
    assert verifier_decision(0, 1, settings, now=7.0, state=state).replicas == 1
    assert verifier_decision(0, 1, settings, now=36.0, state=state).replicas == 1
    zero = verifier_decision(0, 1, settings, now=37.0, state=state)
    assert zero.replicas == 0 and zero.reason.startswith("scale down 1->0: demand 0 verifications")


def test_planner_counts_trees() -> None:
    settings = PlannerScaling(max_replicas=10, trees_per_replica=10, target_utilization=0.5)
    decision = planner_decision(26, 2, settings, now=0.0, state={})
    assert decision.replicas == 6 and "demand 26 trees, capacity 10 trees per replica" in decision.reason


def _ctx(
    metrics: dict[str, dict[ReplicaID, float]] | None,
    current: int,
    config: AutoscalingConfig,
    total_requests: float = 0.0,
    state: dict[str, Any] | None = None,
) -> AutoscalingContext:
    dep = DeploymentID(name="BranchGenerator", app_name="app")
    replicas = [ReplicaID(unique_id=f"r{i}", deployment_id=dep) for i in range(current)]
    return AutoscalingContext(
        deployment_id=dep,
        deployment_name=dep.name,
        app_name="app",
        current_num_replicas=current,
        target_num_replicas=current,
        running_replicas=replicas,
        total_num_requests=total_requests,
        total_queued_requests=0.0,
        aggregated_metrics=metrics,
        raw_metrics=None,
        capacity_adjusted_min_replicas=config.min_replicas,
        capacity_adjusted_max_replicas=config.max_replicas,
        policy_state=state or {},
        last_scale_up_time=None,
        last_scale_down_time=None,
        current_time=1000.0,
        config=config,
    )


def _serve_config(name: str, **overrides: Any) -> AutoscalingConfig:
    config = load_config().with_overrides({"autoscaling": {"enabled": True, **overrides}})
    return AutoscalingConfig(**_autoscaling_options(config)[name]["autoscaling_config"])


def test_serve_generator_policy_reads_custom_metrics_through_serves_wrapper() -> None:
    config = _serve_config("generator", generator={"max_replicas": 6, "target_utilization": 0.8})
    dep = DeploymentID(name="BranchGenerator", app_name="app")
    r0, r1 = (ReplicaID(unique_id=f"r{i}", deployment_id=dep) for i in range(2))
    metrics = {
        # A cluster-wide gauge: every replica reads the same registry; the freshest (max) wins.
        "demand_tokens_per_s": {r0: 900.0, r1: 1000.0},
        # Per-replica measurements: averaged.
        "throughput_tokens_per_s": {r0: 400.0, r1: 600.0},
    }
    policy = _apply_autoscaling_config(GeneratorPolicy(**config.policy.policy_kwargs))
    replicas, state = policy(_ctx(metrics, 2, config))
    assert replicas == 3
    assert state[LAST_DECISION_KEY]["reason"].startswith("scale up 2->3: demand 1000 tokens/s, capacity 500")


def test_serve_policy_without_metrics_keeps_the_target() -> None:
    config = _serve_config("generator")
    replicas, state = GeneratorPolicy(**config.policy.policy_kwargs)(_ctx(None, 1, config))
    assert replicas == 1 and "no replica has reported demand yet" in state[LAST_DECISION_KEY]["reason"]


def test_serve_verifier_and_planner_policies() -> None:
    verifier = _serve_config("verifier", verifier={"verifications_per_replica": 4, "target_utilization": 1.0})
    dep = DeploymentID(name="Verifier", app_name="app")
    r0 = ReplicaID(unique_id="v0", deployment_id=dep)
    replicas, _ = VerifierPolicy(**verifier.policy.policy_kwargs)(
        _ctx({"pending_verifications": {r0: 9.0}}, 1, verifier)
    )
    assert replicas == 3
    planner = _serve_config("planner", planner={"trees_per_replica": 2, "target_utilization": 1.0})
    replicas, _ = PlannerPolicy(**planner.policy.policy_kwargs)(
        _ctx({"active_trees": {r0: 3.0}, "queued_trees": {r0: 2.0}}, 1, planner)
    )
    assert replicas == 3


def test_builder_names_importable_policies_and_zeroes_serves_delays() -> None:
    config = load_config().with_overrides({"autoscaling": {"enabled": True}})
    options = _autoscaling_options(config)
    for name in ("generator", "verifier", "planner"):
        serve_config = AutoscalingConfig(**options[name]["autoscaling_config"])
        assert serve_config.upscale_delay_s == serve_config.downscale_delay_s == 0
        assert callable(serve_config.policy.get_policy())
    assert options["verifier"]["autoscaling_config"]["min_replicas"] == 0
    assert _autoscaling_options(load_config())["generator"] == {}


def test_config_errors_say_what_to_change() -> None:
    with pytest.raises(ValidationError, match=r"max_replicas \(1\) is below min_replicas \(2\)"):
        GeneratorScaling(min_replicas=2, max_replicas=1)
    with pytest.raises(ValidationError, match=r"generator\.min_replicas must be at least 1"):
        GeneratorScaling(min_replicas=0)
    with pytest.raises(ValidationError, match="scale_to_zero_delay_s only applies with min_replicas: 0"):
        VerifierScaling(min_replicas=1, scale_to_zero_delay_s=10)
    base = load_config()
    with pytest.raises(ValidationError, match="unknown tenant\\(s\\) acme; known: anonymous"):
        base.with_overrides({"admission": {"tenant_max_tokens_in_flight": {"acme": 5000}}})
    with pytest.raises(ValidationError, match="admits no request: the smallest effort budget is 96"):
        base.with_overrides({"admission": {"default_max_tokens_in_flight": 50}})
