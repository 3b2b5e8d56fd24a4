"""The simulator reproduces hand-computed scenarios exactly; the shipped traces replay."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from autoscale.sim.cli import run_cli
from autoscale.sim.policies import effort_budget_policy, ray_default_policy
from autoscale.sim.pool import Simulation, percentile, simulate
from autoscale.sim.ray_default import DefaultPolicyParams
from autoscale.sim.trace import Trace
from autoscale.tracegen import SPECS, generate

pytestmark = pytest.mark.unit

TRACES = Path(__file__).parents[2] / "autoscale" / "traces"


def _trace(requests: list[list[Any]], **pool: Any) -> Trace:
    return Trace.from_dict(
        {
            "name": "hand",
            "pool": {
                "replica_tokens_per_s": 100.0,
                "seq_tokens_per_s": 100.0,
                "max_seqs_per_replica": 10,
                "startup_s": 0.0,
                **pool,
            },
            "efforts": {"x": {"deadline_s": 100, "branches": 1}, "y": {"deadline_s": 12, "branches": 2}},
            "scaling": {"min_replicas": 1, "max_replicas": 1},
            "requests": requests,
        }
    )


def _fixed(sim: Simulation, now: float) -> int:
    return sim.target


def test_processor_sharing_by_hand() -> None:
    # One replica of 100 tokens/s; two requests at t=0 of 1000 and 500 tokens share it:
    # 50 tokens/s each until the short one ends at t=10, then 100 tokens/s: the long one
    # has 500 left and ends at t=15.
    result = simulate(_trace([[0, "x", 1000], [0, "x", 500]]), "fixed", _fixed)
    assert (result.answered, result.misses) == (2, 0)
    assert (result.p50_s, result.p95_s) == (10.0, 15.0)
    # The run lasts until the last arrival plus the longest deadline plus one control tick.
    assert result.end_s == 101.0
    assert result.gpu_hours == pytest.approx(101.0 / 3600)


def test_sequences_share_and_deadlines_cancel_by_hand() -> None:
    # y has 2 branches: with x running, 3 sequences share 100 tokens/s (33.3 each); y gets
    # 66.7 tokens/s and needs 1000 tokens: it cannot finish by its 12 s deadline and is
    # cancelled at t=12, after which x runs alone: 400 tokens done by t=12, 600 left at
    # 100 tokens/s: t=18.
    result = simulate(_trace([[0, "x", 1000], [0, "y", 1000]]), "fixed", _fixed)
    assert result.misses_by_effort == {"x": 0, "y": 1}
    assert result.answered == 1 and result.p50_s == pytest.approx(18.0)


def test_requests_wait_for_free_sequences() -> None:
    # Room for 2 sequences: y (2 branches) arrives at t=1 while x holds one; it waits until x
    # ends at t=5 (500 tokens at 100/s), then runs at 100 tokens/s for 200 tokens: done t=7.
    trace = _trace([[0, "x", 500], [1, "y", 200]], max_seqs_per_replica=2)
    result = simulate(trace, "fixed", _fixed)
    assert result.answered == 2 and (result.p50_s, result.p95_s) == (5.0, 6.0)
    waiting = [p.queued for p in result.timeline if 1 <= p.t < 5]
    assert waiting and set(waiting) == {1}


def test_startup_time_delays_new_capacity() -> None:
    trace = Trace.from_dict(
        {
            "name": "startup",
            "pool": {
                "replica_tokens_per_s": 100.0,
                "seq_tokens_per_s": 100.0,
                "max_seqs_per_replica": 10,
                "startup_s": 5.0,
                "initial_replicas": 1,
            },
            "efforts": {"x": {"deadline_s": 100, "branches": 1}},
            "scaling": {"min_replicas": 1, "max_replicas": 2},
            "requests": [[0, "x", 1000], [0, "x", 1000]],
        }
    )

    def two(sim: Simulation, now: float) -> int:
        return 2

    result = simulate(trace, "two", two)
    # 0-5 s: one replica, 50 tokens/s each (250 done); from t=5 two replicas, 100 each: 750 more
    # takes 7.5 s, both answer at 12.5 s.
    assert (result.p50_s, result.p95_s) == (12.5, 12.5)
    # Two replicas paid for from t=0 (the starting one costs too) for the 101 s run.
    assert result.gpu_hours == pytest.approx(2 * 101 / 3600)


def test_ray_default_rule_and_delays() -> None:
    trace = _trace([[0, "x", 100_000]] * 6)
    trace.scaling = trace.scaling.model_copy(update={"max_replicas": 8})
    params = DefaultPolicyParams(target_ongoing_requests=2, upscale_delay_s=3.0, look_back_period_s=1.0)
    result = simulate(trace, "ray", ray_default_policy(params))
    targets = {p.t: p.target for p in result.timeline}
    # 6 ongoing requests / target 2 = 3 replicas, granted once the wish has lasted 3 s.
    assert targets[0.0] == 1 and targets[2.0] == 1 and targets[3.0] == 3


def test_effort_budget_policy_runs_the_same_decision_code() -> None:
    trace = _trace([[0, "x", 5000], [0, "x", 5000]])
    trace.scaling = trace.scaling.model_copy(update={"max_replicas": 8, "target_utilization": 1.0})
    result = simulate(trace, "effort-budget", effort_budget_policy)
    assert result.decisions and "tokens/s" in result.decisions[0]
    assert max(p.target for p in result.timeline) > 1


def test_percentile_is_nearest_rank() -> None:
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert percentile([1.0, 2.0], 95) == 2.0


def test_shipped_traces_come_from_the_seeded_generator() -> None:
    for spec in SPECS:
        shipped = json.loads((TRACES / f"{spec.name}.json").read_text())
        assert shipped == json.loads(json.dumps(generate(spec)))


def test_cli_writes_table_json_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "small.json"
    path.write_text(
        json.dumps(
            {
                "name": "small",
                "pool": {
                    "replica_tokens_per_s": 100.0,
                    "seq_tokens_per_s": 50.0,
                    "max_seqs_per_replica": 8,
                    "startup_s": 2.0,
                },
                "efforts": {
                    "low": {"deadline_s": 30, "branches": 1},
                    "high": {"deadline_s": 60, "branches": 4},
                },
                "scaling": {"min_replicas": 1, "max_replicas": 4},
                "requests": [[i * 2.0, "high" if i % 3 == 0 else "low", 300] for i in range(30)],
            }
        )
    )
    assert run_cli(str(path), str(tmp_path / "out")) == 0
    printed = capsys.readouterr().out
    assert "| effort-budget |" in printed and "| ray-default |" in printed
    summary = json.loads((tmp_path / "out" / "small.json").read_text())
    assert {row["policy"] for row in summary["results"]} == {"effort-budget", "ray-default"}
    assert (tmp_path / "out" / "small.png").stat().st_size > 10_000
