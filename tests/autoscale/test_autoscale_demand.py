"""The demand model and the online throughput meter, on hand-computable inputs."""

from __future__ import annotations

import pytest

from autoscale.demand import Demand, InFlight, Spent, ThroughputMeter, compute_demand, inflow_rate

pytestmark = pytest.mark.unit


def _entry(name: str, tenant: str, tokens: int, calls: int, deadline_at: float) -> InFlight:
    return InFlight(name, f"tree-{name}", tenant, "high", tokens, calls, deadline_at, 0.0)


def test_demand_is_tokens_left_per_second_of_deadline() -> None:
    admitted = [_entry("a", "t1", 1000, 8, 110.0), _entry("b", "t2", 600, 1, 101.0)]
    queued = [_entry("c", "t1", 400, 2, 140.0)]
    spent = {"tree-a": Spent(tokens=200, verifier_calls=3)}
    demand = compute_demand(admitted, queued, spent, now=100.0, min_slack_s=2.0, inflow_tokens_per_s=50.0)
    # a: 800 left over 10 s; b: 600 over the 2 s floor (1 s left); c: 400 over 40 s.
    assert demand.deadline_tokens_per_s == pytest.approx(80 + 300 + 10)
    assert demand.tokens_per_s == pytest.approx(390)
    assert demand.tokens_remaining == 800 + 600 + 400
    assert demand.pending_verifications == 5 + 1 + 2
    assert (demand.active_trees, demand.queued_trees) == (2, 1)
    # Ceilings count what tenants hold (their grants), not what is left.
    assert demand.tokens_in_flight_by_tenant == {"t1": 1000, "t2": 600}


def test_inflow_dominates_when_trees_finish_early() -> None:
    demand = compute_demand([], [], {}, now=0.0, min_slack_s=2.0, inflow_tokens_per_s=1234.0)
    assert demand.tokens_per_s == 1234.0


def test_inflow_rate_uses_whole_buckets_and_a_short_surge_window() -> None:
    # Buckets of 10 s; now=125 is in bucket 12, which is still filling and not counted.
    raw = {b"6": b"600", b"7": b"600", b"11": b"1200", b"12": b"99999", b"5": b"7777"}
    assert inflow_rate(raw, now=125.0) == pytest.approx(max((600 + 600 + 1200) / 60, 1200 / 10))


def test_projected_wait_needs_a_measurement() -> None:
    assert Demand(at=0.0, tokens_remaining=1000).projected_wait_s(500) is None
    assert Demand(at=0.0, tokens_remaining=1000, capacity_tokens_per_s=100).projected_wait_s(500) == 15.0


def test_meter_extrapolates_until_the_engine_is_compute_bound() -> None:
    meter = ThroughputMeter(max_seqs=64, window_s=2.0)
    # 4 sequences at 50 tokens/s each: not compute-bound, so a full batch is extrapolated.
    meter.observe(tokens=400, busy_s=2.0, seq_s=8.0)
    assert meter.tokens_per_s == 50 * 64 and not meter.saturated
    # 40 sequences at 30 tokens/s each: per-sequence speed fell, this is the capacity.
    meter.observe(tokens=2400, busy_s=2.0, seq_s=80.0)
    assert meter.saturated and meter.tokens_per_s == 1200
    # A lightly loaded window afterwards does not drag the estimate down.
    meter.observe(tokens=100, busy_s=2.0, seq_s=2.0)
    assert meter.tokens_per_s == 1200
    # A slower saturated window moves it by the EWMA weight (0.5).
    meter.observe(tokens=2000, busy_s=2.0, seq_s=80.0)
    assert meter.tokens_per_s == pytest.approx(1100)


def test_meter_begin_end_counts_busy_time_and_sequences() -> None:
    meter = ThroughputMeter(max_seqs=8, window_s=1.0)
    meter.begin(seqs=2, now=0.0)
    meter.begin(seqs=2, now=0.5)
    meter.end(tokens=100, seqs=2, now=1.0)  # busy 1.0 s, 1.5 sequence-seconds + ...
    assert meter.samples == 1
    # rate 100 / 1 s over load (2*0.5 + 4*0.5) / 1 = 3 sequences -> 33.3 per sequence, x8.
    assert meter.tokens_per_s == pytest.approx(100 / 3 * 8)
    meter.end(tokens=0, seqs=2, now=3.0)
    assert meter.in_flight == 0
    with pytest.raises(ValueError):
        ThroughputMeter(max_seqs=0)


def test_prefill_bound_calls_stay_out_of_the_measure() -> None:
    meter = ThroughputMeter(max_seqs=8, window_s=1.0)
    # A model judge's call: one token after a long prompt. It says nothing about generation speed.
    assert not meter.measures(1)
    assert meter.measures(ThroughputMeter.MIN_CALL_TOKENS) and meter.measures(256)
    # Generation calls alone make the measure, however many judge calls ran beside them.
    meter.begin(seqs=1, now=0.0)
    meter.end(tokens=115, seqs=1, now=1.0)
    assert meter.tokens_per_s == pytest.approx(115 * 8)
