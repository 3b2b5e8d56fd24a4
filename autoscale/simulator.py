"""A discrete-event simulator of the branch-generator pool under an autoscaling policy.

It replays a request trace (arrival times, efforts, token budgets) through a pool of GPU
replicas and one autoscaling policy, and reports time to answer, deadline misses, GPU-hours
and the replica timeline. Policies compared:

- `effort-budget`: the policy the cluster runs (`autoscale.policies.generator_decision`, the
  demand model `autoscale.demand.compute_demand` and `ThroughputMeter` - the same code);
- `ray-default`: Ray Serve's default ongoing-requests policy, with Ray's own functions for the
  rule (`_apply_scaling_factors`, `_apply_delay_logic`) and its rule
  `desired = current * ongoing / (target_ongoing_requests * current)`, fed with the ongoing
  requests averaged over `look_back_period_s` (Serve's default aggregation, `mean`).

The model of the pool (see docs/autoscale.md):

- a replica serves `replica_tokens_per_s` in total and at most `max_seqs_per_replica`
  sequences; a request runs its `branches` sequences at once; as in continuous batching every
  running sequence decodes at the same speed, `min(seq_tokens_per_s, capacity / sequences)`
  (the load balancer is taken as perfect); requests that find no free sequences wait (FIFO);
- a request that has not finished by its deadline is cancelled and counted as a miss (the
  planner does the same: it stops at the deadline and the gateway answers 504);
- a new replica serves after `startup_s`; it costs GPU time from the moment it is asked for;
  a removed replica stops at once (starting ones are cancelled first);
- the policy runs every `control_interval_s` on metrics refreshed every `metrics_interval_s`.

Between events all rates are constant, so the simulation is exact for this model.
"""

from __future__ import annotations

import heapq
import json
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoscale.demand import InFlight, Spent, ThroughputMeter, compute_demand, inflow_bucket, inflow_rate
from autoscale.policies import generator_decision
from cluster.config import GeneratorScaling

EPS = 1e-9


@dataclass(frozen=True, slots=True)
class EffortProfile:
    deadline_s: float
    branches: int


@dataclass(frozen=True, slots=True)
class PoolParams:
    replica_tokens_per_s: float
    seq_tokens_per_s: float
    max_seqs_per_replica: int
    startup_s: float
    control_interval_s: float = 1.0
    metrics_interval_s: float = 2.0
    initial_replicas: int = 1


@dataclass(frozen=True, slots=True)
class DefaultPolicyParams:
    """Ray Serve AutoscalingConfig fields the default policy reads (Ray's defaults)."""

    target_ongoing_requests: float = 2.0
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    look_back_period_s: float = 30.0


@dataclass(frozen=True, slots=True)
class SimRequest:
    arrival: float
    effort: str
    tokens: int


@dataclass
class Trace:
    name: str
    description: str
    pool: PoolParams
    efforts: dict[str, EffortProfile]
    scaling: GeneratorScaling
    defaults: dict[str, DefaultPolicyParams]
    requests: list[SimRequest]
    min_slack_s: float = 2.0
    meta: dict[str, Any] = field(default_factory=dict)
    # Extra runs of the effort-budget policy with some scaling settings changed (a frontier).
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trace:
        requests = [SimRequest(float(t), str(e), int(n)) for t, e, n in data["requests"]]
        requests.sort(key=lambda r: r.arrival)
        defaults = {
            name: DefaultPolicyParams(**params)
            for name, params in (data.get("default_policies") or {}).items()
        } or {"ray-default": DefaultPolicyParams()}
        return cls(
            name=str(data["name"]),
            description=str(data.get("description", "")),
            pool=PoolParams(**data["pool"]),
            efforts={name: EffortProfile(**p) for name, p in data["efforts"].items()},
            scaling=GeneratorScaling.model_validate(data["scaling"]),
            defaults=defaults,
            requests=requests,
            min_slack_s=float(data.get("min_slack_s", 2.0)),
            meta=dict(data.get("meta") or {}),
            variants=dict(data.get("effort_budget_variants") or {}),
        )

    @classmethod
    def load(cls, path: str | Path) -> Trace:
        return cls.from_dict(json.loads(Path(path).read_text()))


@dataclass
class _Req:
    index: int
    arrival: float
    effort: str
    tokens: int
    deadline_at: float
    branches: int
    started: float | None = None
    finish_v: float = 0.0
    done: bool = False
    finished_at: float | None = None
    missed: bool = False


@dataclass(frozen=True, slots=True)
class TimelinePoint:
    t: float
    ready: int
    starting: int
    target: int
    running: int
    queued: int


@dataclass
class SimResult:
    policy: str
    requests: int
    answered: int
    misses: int
    p50_s: float
    p95_s: float
    gpu_hours: float
    timeline: list[TimelinePoint]
    misses_by_effort: dict[str, int]
    decisions: list[str]
    end_s: float

    def row(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "requests": self.requests,
            "answered": self.answered,
            "deadline_misses": self.misses,
            "miss_rate": round(self.misses / self.requests, 4) if self.requests else 0.0,
            "p50_s": round(self.p50_s, 2),
            "p95_s": round(self.p95_s, 2),
            "gpu_hours": round(self.gpu_hours, 3),
            "peak_replicas": max((p.ready + p.starting for p in self.timeline), default=0),
            "misses_by_effort": self.misses_by_effort,
        }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(math.ceil(q / 100 * len(ordered)), 1)
    return ordered[rank - 1]


# A policy sees the simulator's view and returns the new target.
PolicyFn = Callable[["Simulation", float], int]


class Simulation:
    """One run of one policy over one trace."""

    def __init__(
        self, trace: Trace, policy_name: str, end_s: float | None = None, needs_demand: bool = True
    ) -> None:
        self.needs_demand = needs_demand
        self.trace = trace
        self.pool = trace.pool
        self.policy_name = policy_name
        last = trace.requests[-1].arrival if trace.requests else 0.0
        longest = max((p.deadline_s for p in trace.efforts.values()), default=0.0)
        self.end_s = end_s if end_s is not None else last + longest + self.pool.control_interval_s
        self.now = 0.0
        self.ready = self.pool.initial_replicas
        self.starting: list[float] = []  # ready-at times
        self.target = self.pool.initial_replicas
        self.queue: deque[_Req] = deque()
        self.classes: dict[str, list[tuple[float, int]]] = {}
        self.counts: dict[str, int] = {}
        self.vclock: dict[str, float] = {}
        self.rates: dict[str, float] = {}
        self.reqs: list[_Req] = []
        self.running: dict[int, _Req] = {}
        self.deadlines: list[tuple[float, int]] = []
        self.gpu_seconds = 0.0
        self.timeline: list[TimelinePoint] = []
        self.decisions: list[str] = []
        self.served_since_tick = 0.0
        self.busy_since_tick = 0.0
        self.seq_s_since_tick = 0.0
        self.replica_s_since_tick = 0.0
        self.ongoing_samples: deque[tuple[float, float]] = deque()
        self.metrics_at = -math.inf
        self.state: dict[str, Any] = {}
        self.meter = ThroughputMeter(
            self.pool.max_seqs_per_replica, window_s=max(self.pool.metrics_interval_s, EPS)
        )
        self.snapshot: dict[str, float] = {}
        self.inflow: dict[int, int] = {}

    # ---- pool mechanics -------------------------------------------------------------

    def seqs_in_use(self) -> int:
        return sum(r.branches for r in self.running.values())

    def _recompute_rates(self) -> None:
        # Continuous batching: every running sequence decodes at the same speed.
        capacity = self.ready * self.pool.replica_tokens_per_s
        seqs = self.seqs_in_use()
        per_seq = min(self.pool.seq_tokens_per_s, capacity / seqs) if seqs else 0.0
        self.rates = {
            name: self.trace.efforts[name].branches * per_seq for name, n in self.counts.items() if n > 0
        }

    def _advance(self, until: float) -> None:
        dt = until - self.now
        if dt <= 0:
            return
        served = 0.0
        for name, rate in self.rates.items():
            self.vclock[name] = self.vclock.get(name, 0.0) + rate * dt
            served += rate * self.counts.get(name, 0) * dt
        self.served_since_tick += served
        if self.running:
            self.busy_since_tick += dt
            self.replica_s_since_tick += self.ready * dt
            self.seq_s_since_tick += self.seqs_in_use() * dt
        self.gpu_seconds += (self.ready + len(self.starting)) * dt
        self.now = until

    def _start_waiting(self) -> None:
        limit = self.ready * self.pool.max_seqs_per_replica
        in_use = self.seqs_in_use()
        while self.queue:
            head = self.queue[0]
            if head.done:
                self.queue.popleft()
                continue
            if in_use + head.branches > limit:
                break
            self.queue.popleft()
            head.started = self.now
            head.finish_v = self.vclock.get(head.effort, 0.0) + head.tokens
            heapq.heappush(self.classes.setdefault(head.effort, []), (head.finish_v, head.index))
            self.counts[head.effort] = self.counts.get(head.effort, 0) + 1
            self.running[head.index] = head
            in_use += head.branches

    def _next_completion(self) -> tuple[float, str | None]:
        best, which = math.inf, None
        for name, heap in self.classes.items():
            while heap and self.reqs[heap[0][1]].done:
                heapq.heappop(heap)
            rate = self.rates.get(name, 0.0)
            if heap and rate > 0:
                at = self.now + max(heap[0][0] - self.vclock.get(name, 0.0), 0.0) / rate
                if at < best:
                    best, which = at, name
        return best, which

    def _finish(self, req: _Req, missed: bool) -> None:
        req.done = True
        req.missed = missed
        if not missed:
            req.finished_at = self.now
        if req.index in self.running:
            del self.running[req.index]
            self.counts[req.effort] -= 1

    def remaining_tokens(self, req: _Req) -> float:
        if req.started is None:
            return float(req.tokens)
        return max(req.finish_v - self.vclock.get(req.effort, 0.0), 0.0)

    def _set_target(self, target: int) -> None:
        self.target = target
        have = self.ready + len(self.starting)
        if target > have:
            self.starting += [self.now + self.pool.startup_s] * (target - have)
        while target < self.ready + len(self.starting) and self.starting:
            self.starting.pop()  # the latest asked for goes first
        while target < self.ready and self.ready > 0:
            self.ready -= 1

    # ---- policies ---------------------------------------------------------------------

    def active(self) -> Iterable[_Req]:
        yield from self.running.values()
        yield from (r for r in self.queue if not r.done)

    def refresh_metrics(self) -> None:
        """What replicas would report now (demand, throughput, ongoing requests)."""
        busy = self.busy_since_tick
        if busy > 0 and self.replica_s_since_tick > 0:
            # What one replica saw: tokens and sequence-seconds per replica-second, over busy time.
            per_replica = busy / self.replica_s_since_tick
            self.meter.observe(
                self.served_since_tick * per_replica, busy, self.seq_s_since_tick * per_replica
            )
        self.served_since_tick = 0.0
        self.busy_since_tick = 0.0
        self.seq_s_since_tick = 0.0
        self.replica_s_since_tick = 0.0
        ongoing = float(len(self.running) + sum(1 for r in self.queue if not r.done))
        self.ongoing_samples.append((self.now, ongoing))
        self.metrics_at = self.now
        self.snapshot = {"ongoing": ongoing}
        if not self.needs_demand:
            return
        admitted, spent = [], {}
        for req in self.active():
            key = str(req.index)
            entry = InFlight(key, key, "sim", req.effort, req.tokens, 0, req.deadline_at, req.arrival)
            admitted.append(entry)
            spent[key] = Spent(tokens=int(req.tokens - self.remaining_tokens(req)))
        inflow = inflow_rate(self.inflow, self.now)
        demand = compute_demand(
            admitted, [], spent, self.now, self.trace.min_slack_s, inflow_tokens_per_s=inflow
        )
        self.snapshot["demand_tokens_per_s"] = demand.tokens_per_s


def effort_budget(scaling: GeneratorScaling | None = None) -> PolicyFn:
    """The cluster's generator policy (the trace's scaling settings unless given)."""

    def policy(sim: Simulation, now: float) -> int:
        decision = generator_decision(
            sim.snapshot.get("demand_tokens_per_s", 0.0),
            sim.meter.tokens_per_s,
            sim.target,
            scaling or sim.trace.scaling,
            now,
            sim.state,
        )
        if decision.replicas != decision.current:
            sim.decisions.append(f"t={now:.0f}s {decision.reason}")
        return decision.replicas

    policy.needs_demand = True  # type: ignore[attr-defined]
    return policy


effort_budget_policy = effort_budget()


def ray_default_policy(params: DefaultPolicyParams) -> PolicyFn:
    """Ray Serve's default policy, using Ray's own scaling-factor and delay functions."""
    from ray.serve.autoscaling_policy import _apply_delay_logic, _apply_scaling_factors
    from ray.serve.config import AutoscalingConfig

    def policy(sim: Simulation, now: float) -> int:
        scaling = sim.trace.scaling
        config = AutoscalingConfig(
            min_replicas=scaling.min_replicas,
            max_replicas=scaling.max_replicas,
            target_ongoing_requests=params.target_ongoing_requests,
            upscale_delay_s=params.upscale_delay_s,
            downscale_delay_s=params.downscale_delay_s,
            look_back_period_s=params.look_back_period_s,
            metrics_interval_s=min(params.look_back_period_s / 2, 10.0),
        )
        while sim.ongoing_samples and sim.ongoing_samples[0][0] < now - params.look_back_period_s:
            sim.ongoing_samples.popleft()
        samples = [v for _, v in sim.ongoing_samples]
        total = sum(samples) / len(samples) if samples else 0.0
        current = sim.ready  # running replicas (ctx.current_num_replicas)
        if current == 0:
            desired: float = sim.target
        else:
            desired = current * (total / (config.get_target_ongoing_requests() * current))
        scaled = _apply_scaling_factors(desired, current, config)
        decided, sim.state = _apply_delay_logic(max(0, scaled), sim.target, config, sim.state, _now=now)
        decided = min(max(decided, scaling.min_replicas), scaling.max_replicas)
        if decided != sim.target:
            sim.decisions.append(
                f"t={now:.0f}s {sim.target}->{decided}: ongoing {total:.1f} over target "
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


def simulate(trace: Trace, policy_name: str, policy: PolicyFn, end_s: float | None = None) -> SimResult:
    sim = Simulation(trace, policy_name, end_s, needs_demand=getattr(policy, "needs_demand", False))
    arrivals = deque(trace.requests)
    next_tick = 0.0
    while True:
        next_arrival = arrivals[0].arrival if arrivals else math.inf
        completion, _ = sim._next_completion()
        while sim.deadlines and sim.reqs[sim.deadlines[0][1]].done:
            heapq.heappop(sim.deadlines)
        deadline = sim.deadlines[0][0] if sim.deadlines else math.inf
        ready_at = min(sim.starting) if sim.starting else math.inf
        t = min(next_arrival, completion, deadline, ready_at, next_tick)
        if t > sim.end_s:
            sim._advance(sim.end_s)
            break
        sim._advance(t)
        if completion <= t + EPS:
            for name, heap in sim.classes.items():
                while heap and (sim.reqs[heap[0][1]].done or heap[0][0] - sim.vclock.get(name, 0.0) <= 1e-6):
                    _, index = heapq.heappop(heap)
                    req = sim.reqs[index]
                    if not req.done:
                        sim._finish(req, missed=False)
        if deadline <= t + EPS:
            while sim.deadlines and sim.deadlines[0][0] <= t + EPS:
                _, index = heapq.heappop(sim.deadlines)
                req = sim.reqs[index]
                if not req.done:
                    sim._finish(req, missed=True)
        while sim.starting and min(sim.starting) <= t + EPS:
            sim.starting.remove(min(sim.starting))
            sim.ready += 1
        while arrivals and arrivals[0].arrival <= t + EPS:
            item = arrivals.popleft()
            profile = trace.efforts[item.effort]
            req = _Req(
                len(sim.reqs),
                item.arrival,
                item.effort,
                item.tokens,
                item.arrival + profile.deadline_s,
                profile.branches,
            )
            sim.reqs.append(req)
            bucket = inflow_bucket(item.arrival)
            sim.inflow[bucket] = sim.inflow.get(bucket, 0) + item.tokens
            sim.queue.append(req)
            heapq.heappush(sim.deadlines, (req.deadline_at, req.index))
        if next_tick <= t + EPS:
            if t - sim.metrics_at + EPS >= sim.pool.metrics_interval_s:
                sim.refresh_metrics()
            sim._set_target(policy(sim, t))
            sim.timeline.append(
                TimelinePoint(
                    t,
                    sim.ready,
                    len(sim.starting),
                    sim.target,
                    len(sim.running),
                    sum(1 for r in sim.queue if not r.done),
                )
            )
            next_tick = t + sim.pool.control_interval_s
        sim._start_waiting()
        sim._recompute_rates()
    return _result(sim)


def _result(sim: Simulation) -> SimResult:
    answered = [r.finished_at - r.arrival for r in sim.reqs if r.finished_at is not None]
    misses_by_effort: dict[str, int] = {name: 0 for name in sim.trace.efforts}
    for r in sim.reqs:
        if r.missed:
            misses_by_effort[r.effort] += 1
    return SimResult(
        policy=sim.policy_name,
        requests=len(sim.reqs),
        answered=len(answered),
        misses=sum(misses_by_effort.values()),
        p50_s=percentile(answered, 50),
        p95_s=percentile(answered, 95),
        gpu_hours=sim.gpu_seconds / 3600,
        timeline=sim.timeline,
        misses_by_effort=misses_by_effort,
        decisions=sim.decisions,
        end_s=sim.end_s,
    )


def compare(trace: Trace) -> list[SimResult]:
    return [simulate(trace, name, policy) for name, policy in policies_for(trace).items()]


def format_table(trace: Trace, results: list[SimResult]) -> str:
    header = (
        "| policy | requests | deadline misses | miss rate | p50 s | p95 s | GPU-hours | peak replicas |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    lines = [f"trace {trace.name}: {trace.description}", "", header]
    for result in results:
        row = result.row()
        lines.append(
            f"| {row['policy']} | {row['requests']} | {row['deadline_misses']} | {row['miss_rate']:.2%} | "
            f"{row['p50_s']:.1f} | {row['p95_s']:.1f} | {row['gpu_hours']:.2f} | {row['peak_replicas']} |"
        )
    return "\n".join(lines)


def plot(trace: Trace, results: list[SimResult], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    for result in results:
        times = [p.t / 60 for p in result.timeline]
        top.step(
            times,
            [p.ready + p.starting for p in result.timeline],
            where="post",
            label=f"{result.policy} ({result.gpu_hours:.1f} GPU-h, {result.misses} misses)",
        )
        bottom.step(times, [p.queued for p in result.timeline], where="post", label=result.policy)
    arrivals: dict[int, int] = {}
    for req in trace.requests:
        if req.effort == "high":
            arrivals[int(req.arrival // 60)] = arrivals.get(int(req.arrival // 60), 0) + 1
    if arrivals:
        twin = top.twinx()
        twin.bar(list(arrivals), list(arrivals.values()), width=1.0, alpha=0.15, color="grey", align="edge")
        twin.set_ylabel("high-effort arrivals / min")
    top.set_ylabel("GPU replicas (ready + starting)")
    top.set_title(f"{trace.name}: {trace.description}")
    top.legend(loc="upper left", fontsize=8)
    bottom.set_ylabel("requests waiting")
    bottom.set_xlabel("minutes")
    bottom.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_cli(trace_path: str, out_dir: str | None) -> int:
    """`reasoning-cluster simulate`: print the comparison; write JSON and a PNG to out_dir."""
    trace = Trace.load(trace_path)
    results = compare(trace)
    print(format_table(trace, results))
    for result in results:
        if result.misses_by_effort:
            print(f"{result.policy}: misses by effort {result.misses_by_effort}")
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        summary = {"trace": trace.name, "results": [r.row() for r in results]}
        (out / f"{trace.name}.json").write_text(json.dumps(summary, indent=2) + "\n")
        png = plot(trace, results, out / f"{trace.name}.png")
        print(f"wrote {out / (trace.name + '.json')} and {png}")
    return 0
