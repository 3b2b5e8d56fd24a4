"""Autoscaling policies keyed to reasoning budgets, as pure functions plus Serve wrappers.

The pure functions take numbers (demand, measured capacity, current target, settings, the
time and the policy's state) and return a `Decision`: the replica count and the reason, with
the demand, capacity and target that produced it. Delays live here too, driven by the
`now` they are given, so tests and the simulator run them on their own clocks.

The Serve wrappers (`GeneratorPolicy`, `VerifierPolicy`, `PlannerPolicy`) are class policies
for Ray Serve 2.60 (`AutoscalingPolicy(policy_function="autoscale.policies:GeneratorPolicy",
policy_kwargs={...})`): Serve instantiates the class once with `policy_kwargs` and calls it
with an `AutoscalingContext` every control-loop tick; it returns `(replicas, state)`. Custom
metrics from the replicas' `record_autoscaling_stats()` arrive as
`ctx.aggregated_metrics[name][replica_id]` (each replica's value averaged over
`look_back_period_s`). Serve wraps the policy with its own delay logic and bounds; the builder
sets Serve's delays to 0 so that the delays below are the only ones.

Each decision is kept in the returned state (`last_decision`, `decisions`) and logged, so
it can be read back and exported as a metric (`decision_metrics`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

from cluster.config import GeneratorScaling, PlannerScaling, ScalingSettings, VerifierScaling

logger = logging.getLogger("ray.serve")

PENDING_KEY = "pending"
LAST_DECISION_KEY = "last_decision"
HISTORY_KEY = "decisions"
HISTORY_LENGTH = 20


@dataclass(frozen=True, slots=True)
class Decision:
    """One autoscaling decision and why."""

    deployment: str
    replicas: int
    # What demand alone asks for (bounded), before delays hold it.
    desired: int
    current: int
    demand: float
    demand_unit: str
    capacity_per_replica: float
    target_utilization: float
    reason: str
    at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bounded(raw: int, settings: ScalingSettings) -> int:
    return min(max(raw, settings.min_replicas), settings.max_replicas)


def replicas_for(demand: float, capacity_per_replica: float, target_utilization: float) -> int:
    """Smallest replica count whose planned capacity covers the demand."""
    if demand <= 0:
        return 0
    if capacity_per_replica <= 0:
        raise ValueError(f"capacity_per_replica must be positive, got {capacity_per_replica}")
    return max(math.ceil(demand / (capacity_per_replica * target_utilization) - 1e-9), 1)


def apply_delays(
    desired: int,
    current: int,
    settings: ScalingSettings,
    now: float,
    state: dict[str, Any],
) -> tuple[int, str]:
    """Hold a change until the wish has lasted the configured delay; returns (replicas, note)."""
    pending = state.get(PENDING_KEY)
    if desired == current:
        state[PENDING_KEY] = None
        return current, ""
    direction = "up" if desired > current else "down"
    if direction == "up":
        delay = settings.upscale_delay_s
    elif desired == 0 and settings.scale_to_zero_delay_s is not None:
        delay = settings.scale_to_zero_delay_s
    else:
        delay = settings.downscale_delay_s
    if not pending or pending.get("direction") != direction:
        pending = {"direction": direction, "since": now}
    waited = now - float(pending["since"])
    if waited + 1e-6 >= delay:
        state[PENDING_KEY] = None
        return desired, ""
    state[PENDING_KEY] = pending
    return current, f"; holding {current} (scale {direction} to {desired} waits {waited:.1f}/{delay:g} s)"


def _decide(
    deployment: str,
    demand: float,
    unit: str,
    capacity: float,
    capacity_note: str,
    current: int,
    settings: ScalingSettings,
    now: float,
    state: dict[str, Any],
) -> Decision:
    needed = replicas_for(demand, capacity, settings.target_utilization)
    desired = _bounded(needed, settings)
    replicas, held = apply_delays(desired, current, settings, now, state)
    bound = ""
    if needed > settings.max_replicas:
        bound = f" (capped at max_replicas {settings.max_replicas})"
    elif needed < settings.min_replicas:
        bound = f" (raised to min_replicas {settings.min_replicas})"
    verb = "scale up" if replicas > current else "scale down" if replicas < current else "keep"
    reason = (
        f"{verb} {current}->{replicas}: demand {demand:.4g} {unit}, capacity {capacity:.4g} {unit} "
        f"per replica{capacity_note} at {settings.target_utilization:.0%} target -> "
        f"{needed} needed{bound}{held}"
    )
    decision = Decision(
        deployment=deployment,
        replicas=replicas,
        desired=desired,
        current=current,
        demand=demand,
        demand_unit=unit,
        capacity_per_replica=capacity,
        target_utilization=settings.target_utilization,
        reason=reason,
        at=now,
    )
    _remember(state, decision)
    return decision


def _remember(state: dict[str, Any], decision: Decision) -> None:
    state[LAST_DECISION_KEY] = decision.to_dict()
    history = list(state.get(HISTORY_KEY) or [])
    # Keep changes and the latest tick; a steady state does not flood the history.
    if (
        not history
        or history[-1]["replicas"] != decision.replicas
        or history[-1]["reason"] != decision.reason
    ):
        history.append(decision.to_dict())
    state[HISTORY_KEY] = history[-HISTORY_LENGTH:]


def generator_decision(
    demand_tokens_per_s: float,
    measured_tokens_per_s: float | None,
    current: int,
    settings: GeneratorScaling,
    now: float,
    state: dict[str, Any],
) -> Decision:
    """Branch-generators: tokens per second of deadline over measured tokens/s per replica."""
    if measured_tokens_per_s is not None and measured_tokens_per_s > 0:
        capacity, note = measured_tokens_per_s, " (measured)"
    else:
        capacity, note = settings.prior_tokens_per_s, " (prior: nothing measured yet)"
    return _decide(
        "branch_generator", demand_tokens_per_s, "tokens/s", capacity, note, current, settings, now, state
    )


def verifier_decision(
    pending_verifications: float, current: int, settings: VerifierScaling, now: float, state: dict[str, Any]
) -> Decision:
    """Verifiers: verifier calls still open in the budgets of trees in flight."""
    return _decide(
        "verifier",
        pending_verifications,
        "verifications",
        settings.verifications_per_replica,
        "",
        current,
        settings,
        now,
        state,
    )


def planner_decision(
    active_trees: float, current: int, settings: PlannerScaling, now: float, state: dict[str, Any]
) -> Decision:
    """Planners: trees in flight (admitted and queued)."""
    return _decide(
        "planner", active_trees, "trees", settings.trees_per_replica, "", current, settings, now, state
    )


def decision_metrics(state: dict[str, Any]) -> dict[str, float]:
    """The last decision kept in a policy's state, as numbers an exporter can publish."""
    last = state.get(LAST_DECISION_KEY)
    if not last:
        return {}
    return {
        "replicas": float(last["replicas"]),
        "desired": float(last["desired"]),
        "demand": float(last["demand"]),
        "capacity_per_replica": float(last["capacity_per_replica"]),
        "target_utilization": float(last["target_utilization"]),
    }


# ---- decisions as Prometheus metrics ----------------------------------------------------

# Exported by Ray's metrics agent from the Serve controller (prefixed `ray_` when scraped).
DECISION_METRICS = {
    "rc_autoscale_desired_replicas": "Replicas the effort-budget policy decided (after its delays).",
    "rc_autoscale_demand_replicas": "Replicas demand alone asks for (bounded, before delays).",
    "rc_autoscale_demand": "Demand the policy saw, in its unit (tokens/s, verifications, trees).",
    "rc_autoscale_capacity_per_replica": "Capacity per replica the policy used, same unit as demand.",
}


class DecisionExporter:
    """Publishes each decision with `ray.util.metrics` (only inside a Ray process)."""

    def __init__(self) -> None:
        self._gauges: dict[str, Any] | None = None
        self._counter: Any = None

    def export(self, decision: Decision) -> None:
        try:
            import ray

            if not ray.is_initialized():
                return
            if self._gauges is None:
                from ray.util import metrics

                self._gauges = {
                    name: metrics.Gauge(name, description=text, tag_keys=("deployment", "unit"))
                    for name, text in DECISION_METRICS.items()
                }
                self._counter = metrics.Counter(
                    "rc_autoscale_decisions_total",
                    description="Scaling decisions that changed the replica count, by direction.",
                    tag_keys=("deployment", "direction"),
                )
            tags = {"deployment": decision.deployment, "unit": decision.demand_unit}
            values = {
                "rc_autoscale_desired_replicas": decision.replicas,
                "rc_autoscale_demand_replicas": decision.desired,
                "rc_autoscale_demand": decision.demand,
                "rc_autoscale_capacity_per_replica": decision.capacity_per_replica,
            }
            for name, value in values.items():
                self._gauges[name].set(float(value), tags=tags)
            if decision.replicas != decision.current:
                direction = "up" if decision.replicas > decision.current else "down"
                self._counter.inc(1.0, tags={"deployment": decision.deployment, "direction": direction})
        except Exception:  # metrics must never stop the autoscaler
            logger.debug("could not export autoscaling metrics", exc_info=True)


# ---- Ray Serve wrappers ---------------------------------------------------------------


def _metric(ctx: Any, name: str) -> dict[Any, float]:
    metrics = ctx.aggregated_metrics or {}
    values = metrics.get(name) or {}
    return {replica: float(value) for replica, value in values.items() if value is not None}


def _cluster_gauge(ctx: Any, name: str) -> float | None:
    """A cluster-wide value every replica reports (read from Redis): the freshest is the largest."""
    values = _metric(ctx, name)
    return max(values.values()) if values else None


def _now(ctx: Any) -> float:
    import time

    return float(ctx.current_time) if ctx.current_time is not None else time.time()


class _ServePolicy:
    settings: ScalingSettings
    exporter: DecisionExporter | None = None

    def _no_metrics(self, ctx: Any, state: dict[str, Any], deployment: str) -> tuple[int, dict[str, Any]]:
        current = int(ctx.target_num_replicas)
        state[LAST_DECISION_KEY] = Decision(
            deployment,
            current,
            current,
            current,
            0.0,
            "",
            0.0,
            self.settings.target_utilization,
            f"keep {current}: no replica has reported demand yet",
            _now(ctx),
        ).to_dict()
        return current, state

    def _finish(self, decision: Decision, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.exporter is None:
            self.exporter = DecisionExporter()
        self.exporter.export(decision)
        if decision.replicas != decision.current:
            logger.info("autoscale %s: %s", decision.deployment, decision.reason)
        return decision.replicas, state


class GeneratorPolicy(_ServePolicy):
    def __init__(self, **settings: Any) -> None:
        self.settings = GeneratorScaling.model_validate(settings)

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        state = dict(ctx.policy_state or {})
        demand = _cluster_gauge(ctx, "demand_tokens_per_s")
        if demand is None:
            return self._no_metrics(ctx, state, "branch_generator")
        measured = [v for v in _metric(ctx, "throughput_tokens_per_s").values() if v > 0]
        capacity = sum(measured) / len(measured) if measured else None
        assert isinstance(self.settings, GeneratorScaling)
        decision = generator_decision(
            demand, capacity, int(ctx.target_num_replicas), self.settings, _now(ctx), state
        )
        return self._finish(decision, state)


class VerifierPolicy(_ServePolicy):
    def __init__(self, **settings: Any) -> None:
        self.settings = VerifierScaling.model_validate(settings)

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        state = dict(ctx.policy_state or {})
        pending = _cluster_gauge(ctx, "pending_verifications")
        if pending is None:
            return self._no_metrics(ctx, state, "verifier")
        # Verifications Serve already sees queued or running count too (the judge's calls).
        pending = max(pending, float(ctx.total_num_requests or 0))
        assert isinstance(self.settings, VerifierScaling)
        decision = verifier_decision(pending, int(ctx.target_num_replicas), self.settings, _now(ctx), state)
        return self._finish(decision, state)


class PlannerPolicy(_ServePolicy):
    def __init__(self, **settings: Any) -> None:
        self.settings = PlannerScaling.model_validate(settings)

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        state = dict(ctx.policy_state or {})
        trees = _cluster_gauge(ctx, "active_trees")
        if trees is None:
            return self._no_metrics(ctx, state, "planner")
        queued = _cluster_gauge(ctx, "queued_trees") or 0.0
        assert isinstance(self.settings, PlannerScaling)
        decision = planner_decision(
            trees + queued, int(ctx.target_num_replicas), self.settings, _now(ctx), state
        )
        return self._finish(decision, state)


POLICY_PATHS = {
    "generator": "autoscale.policies:GeneratorPolicy",
    "verifier": "autoscale.policies:VerifierPolicy",
    "planner": "autoscale.policies:PlannerPolicy",
}
