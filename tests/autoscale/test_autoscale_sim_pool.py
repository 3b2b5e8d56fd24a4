"""The pool's running bookkeeping equals a recount; the demand report equals the demand model
computed from scratch; parallel runs equal serial ones."""

from __future__ import annotations

import random
from typing import Any

import pytest

from autoscale.demand import InFlight, Spent, compute_demand, inflow_bucket, inflow_rate
from autoscale.sim.cli import compare
from autoscale.sim.policies import demand_tokens_per_s, effort_budget_policy
from autoscale.sim.pool import Simulation, simulate
from autoscale.sim.trace import Trace

pytestmark = pytest.mark.unit


def _random_trace(seed: int, requests: int = 400) -> Trace:
    rng = random.Random(seed)
    rows: list[list[Any]] = []
    t = 0.0
    for _ in range(requests):
        t += rng.expovariate(4.0)
        effort = rng.choice(["low", "low", "medium", "high"])
        rows.append(
            [round(t, 3), effort, rng.randint(50, {"low": 400, "medium": 1500, "high": 4000}[effort])]
        )
    return Trace.from_dict(
        {
            "name": f"random-{seed}",
            "pool": {
                "replica_tokens_per_s": 400.0,
                "seq_tokens_per_s": 40.0,
                "max_seqs_per_replica": 16,
                "startup_s": 7.0,
                "initial_replicas": 2,
            },
            "efforts": {
                "low": {"deadline_s": 15, "branches": 1},
                "medium": {"deadline_s": 30, "branches": 4},
                "high": {"deadline_s": 60, "branches": 8},
            },
            "scaling": {"min_replicas": 1, "max_replicas": 12, "downscale_delay_s": 5.0},
            "effort_budget_variants": {"effort-budget-util-0.6": {"target_utilization": 0.6}},
            "default_policies": {
                "ray-default": {},
                "ray-tuned": {"upscale_delay_s": 0, "downscale_delay_s": 5},
            },
            "requests": rows,
        }
    )


def _recount(sim: Simulation) -> None:
    assert sim.seqs == sum(job.branches for job in sim.running.values())
    assert sim.waiting == sum(1 for job in sim.queue if not job.done)
    for name, count in sim.counts.items():
        assert count == sum(1 for job in sim.running.values() if job.effort == name)
    assert list(sim.starting) == sorted(sim.starting)


def _demand_from_scratch(sim: Simulation) -> float:
    """The old simulator's way: fresh registry entries and ledgers, the whole inflow history."""
    admitted, spent = [], {}
    for job in [*sim.running.values(), *(job for job in sim.queue if not job.done)]:
        key = str(job.index)
        admitted.append(InFlight(key, key, "sim", job.effort, job.tokens, 0, job.deadline_at, job.arrival))
        remaining = float(job.tokens)
        if job.started is not None:
            remaining = max(job.finish_v - sim.vclock.get(job.effort, 0.0), 0.0)
        spent[key] = Spent(tokens=int(job.tokens - remaining))
    inflow: dict[int, int] = {}
    for job in sim.jobs:
        inflow[inflow_bucket(job.arrival)] = inflow.get(inflow_bucket(job.arrival), 0) + job.tokens
    rate = inflow_rate(inflow, sim.now)
    return compute_demand(
        admitted, [], spent, sim.now, sim.trace.min_slack_s, inflow_tokens_per_s=rate
    ).tokens_per_s


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_counters_and_demand_report_match_a_recount_at_every_tick(seed: int) -> None:
    rng = random.Random(seed)
    checked = []

    def policy(sim: Simulation, now: float) -> int:
        _recount(sim)
        if sim.metrics.at == now:
            assert demand_tokens_per_s(sim) == _demand_from_scratch(sim)
            checked.append(now)
        # Random targets exercise starting replicas, their cancellation and removal.
        return rng.randint(1, 10)

    result = simulate(_random_trace(seed), "random", policy)
    assert len(checked) > 50
    assert result.answered > 0 and result.answered + result.misses == result.requests


def test_effort_budget_reads_the_demand_report() -> None:
    trace = _random_trace(4)
    reports = []

    def policy(sim: Simulation, now: float) -> int:
        replicas = effort_budget_policy(sim, now)
        reports.append((sim.metrics.demand_tokens_per_s, sim.state["last_decision"]["demand"]))
        return replicas

    simulate(trace, "effort-budget", policy)
    assert reports and all(report == demand for report, demand in reports)
    assert max(demand for _, demand in reports) > 0


def test_mean_ongoing_averages_the_samples_in_the_window() -> None:
    sim = Simulation(_random_trace(5, requests=1))
    sim.ongoing_samples = [(0.0, 9.0), (2.0, 1.0), (4.0, 2.0), (6.0, 6.0)]
    assert sim.mean_ongoing(since=2.0) == 3.0
    assert sim.mean_ongoing(since=6.5) == 0.0


def test_parallel_runs_equal_serial_runs() -> None:
    trace = _random_trace(6)
    serial = compare(trace, jobs=1)
    parallel = compare(trace, jobs=2)
    assert [r.policy for r in parallel] == [
        "effort-budget",
        "effort-budget-util-0.6",
        "ray-default",
        "ray-tuned",
    ]
    assert [(r.row(), r.timeline, r.decisions) for r in parallel] == [
        (r.row(), r.timeline, r.decisions) for r in serial
    ]
