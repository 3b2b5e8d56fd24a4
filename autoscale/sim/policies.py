"""The policies the simulator compares, as `PolicyFn`s over a `Simulation`.

- `effort-budget`: the policy the cluster runs, the same code: the demand model
  (`autoscale.demand.compute_demand` over the registry entries of the requests in flight),
  the replicas' `ThroughputMeter` and `autoscale.policies.generator_decision` with its delays;
- `ray-default`: Ray Serve's default ongoing-requests policy (`autoscale.sim.ray_default`),
  fed with the ongoing requests averaged over `look_back_period_s` (Serve's default
  aggregation, `mean`). "Ongoing requests" of the generator deployment are the trees at the
  generators: each tree has one batched `generate` call in flight.
"""

from __future__ import annotations

import functools

from autoscale.demand import Spent, compute_demand, inflow_rate
from autoscale.policies import generator_decision
from autoscale.sim.pool import PolicyFn, Simulation
from autoscale.sim.ray_default import DefaultPolicyParams, DelayState, decide
from autoscale.sim.trace import Trace
from cluster.config import GeneratorScaling


@functools.lru_cache(maxsize=1 << 16)
def spent_tokens(tokens: int) -> Spent:
    """`Spent` is immutable: one per count, shared (building one per running request at every
    refresh was a large share of a fleet-sized run)."""
    return Spent(tokens)


def demand_tokens_per_s(sim: Simulation) -> float:
    """The replicas' demand report at the last metrics refresh: `compute_demand` over the
    registry entries of the requests in flight and what each has spent. Computed on first use
    and kept; the effort-budget policy reads it every tick, so in the tick of the refresh."""
    metrics = sim.metrics
    if metrics.demand_tokens_per_s is None:
        # The hot loop of a fleet-sized run: requests in flight times refreshes.
        admitted = []
        spent: dict[str, Spent] = {}
        clock = sim.vclock
        for job in sim.running.values():
            admitted.append(job.entry)
            # Tokens left: how far its class's clock has still to go to its finishing point.
            left = job.finish_v - clock.get(job.effort, 0.0)
            spent[job.entry.tree_id] = spent_tokens(int(job.tokens - (left if left > 0.0 else 0.0)))
        # Waiting requests have spent nothing: compute_demand's default for an absent ledger.
        admitted.extend(job.entry for job in sim.queue if not job.done)
        demand = compute_demand(
            admitted,
            [],
            spent,
            metrics.at,
            sim.trace.min_slack_s,
            inflow_tokens_per_s=inflow_rate(sim.inflow, metrics.at),
        )
        metrics.demand_tokens_per_s = demand.tokens_per_s
    return metrics.demand_tokens_per_s


def effort_budget(scaling: GeneratorScaling | None = None) -> PolicyFn:
    """The cluster's generator policy (the trace's scaling settings unless given)."""

    def policy(sim: Simulation, now: float) -> int:
        decision = generator_decision(
            demand_tokens_per_s(sim),
            sim.meter.tokens_per_s,
            sim.target,
            scaling or sim.trace.scaling,
            now,
            sim.state,
        )
        if decision.replicas != decision.current:
            sim.decisions.append(f"t={now:.0f}s {decision.reason}")
        return decision.replicas

    return policy


effort_budget_policy = effort_budget()

DELAY_STATE_KEY = "ray_default_delays"


def ray_default_policy(params: DefaultPolicyParams) -> PolicyFn:
    """Ray Serve's default policy, bounded by the trace's min/max replicas."""

    def policy(sim: Simulation, now: float) -> int:
        scaling = sim.trace.scaling
        delays = sim.state.setdefault(DELAY_STATE_KEY, DelayState())
        assert isinstance(delays, DelayState)
        ongoing = sim.mean_ongoing(now - params.look_back_period_s)
        # Running replicas (Serve's ctx.current_num_replicas), not those still starting.
        decided = decide(ongoing, sim.ready, sim.target, params, delays, now)
        decided = min(max(decided, scaling.min_replicas), scaling.max_replicas)
        if decided != sim.target:
            sim.decisions.append(
                f"t={now:.0f}s {sim.target}->{decided}: ongoing {ongoing:.1f} over target "
                f"{params.target_ongoing_requests:g} per replica"
            )
        return decided

    return policy


def policies_for(trace: Trace) -> dict[str, PolicyFn]:
    chosen: dict[str, PolicyFn] = {"effort-budget": effort_budget_policy}
    for name, changes in trace.variants.items():
        chosen[name] = effort_budget(trace.scaling.model_copy(update=changes))
    for name, params in trace.defaults.items():
        chosen[name] = ray_default_policy(params)
    return chosen
