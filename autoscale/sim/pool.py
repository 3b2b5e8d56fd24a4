"""The pool model and its event loop: one policy over one trace (docs/autoscale.md, Simulator).

- a replica serves `replica_tokens_per_s` in total and at most `max_seqs_per_replica`
  sequences; a request runs its `branches` sequences at once; as in continuous batching every
  running sequence decodes at the same speed, `min(seq_tokens_per_s, capacity / sequences)`
  (the load balancer is taken as perfect); requests that find no free sequences wait (FIFO);
- a request that has not finished by its deadline is cancelled and counted as a miss (the
  planner does the same: it stops at the deadline and the gateway answers 504);
- a new replica serves after `startup_s`; it costs GPU time from the moment it is asked for;
  a removed replica stops at once (starting ones are cancelled first);
- the policy runs every `control_interval_s` on metrics refreshed every `metrics_interval_s`.

Between events all rates are constant, so the simulation is exact for this model. The work per
event does not grow with the number of requests in flight: every running sequence decodes at
the same speed, so each effort class keeps one virtual clock (tokens decoded per request of
that class) and a heap of its requests' finishing points on it; sequences in use and requests
waiting are counters. Only the metrics refresh (every `metrics_interval_s`) visits the
requests in flight, as the replicas' demand report does.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autoscale.demand import INFLOW_BUCKET_S, INFLOW_WINDOW_S, InFlight, ThroughputMeter, inflow_bucket
from autoscale.sim.trace import Trace

EPS = 1e-9
# A request whose remaining tokens are below this has finished (float residue of the clocks).
FINISH_TOLERANCE = 1e-6


@dataclass(slots=True)
class Job:
    """One request in the pool; `entry` is what the gateway registers for it (demand model)."""

    index: int
    arrival: float
    effort: str
    tokens: int
    deadline_at: float
    branches: int
    entry: InFlight
    started: float | None = None
    # Where the effort class's virtual clock stands when this request has decoded its tokens.
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


@dataclass(slots=True)
class Metrics:
    """What the replicas reported at the last metrics refresh."""

    at: float
    # The demand report (tokens/s), computed on first use: only the effort-budget policy reads it.
    demand_tokens_per_s: float | None = None


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


class Simulation:
    """The pool's state during one run; policies read it (and keep their state in `state`)."""

    def __init__(self, trace: Trace, end_s: float | None = None) -> None:
        self.trace = trace
        self.pool = trace.pool
        self.end_s = end_s if end_s is not None else trace.default_end_s()
        self.now = 0.0
        self.ready = self.pool.initial_replicas
        self.starting: deque[float] = deque()  # ready-at times, in the order asked for
        self.target = self.pool.initial_replicas
        self.jobs: list[Job] = []
        self.queue: deque[Job] = deque()  # FIFO; cancelled jobs are dropped when they reach the head
        self.waiting = 0  # jobs in the queue not cancelled
        self.running: dict[int, Job] = {}
        self.seqs = 0  # sequences of the running jobs
        # Per effort class: finishing points (finish_v, index), running count, clock, rate.
        self.finishing: dict[str, list[tuple[float, int]]] = {}
        self.counts: dict[str, int] = {}
        self.vclock: dict[str, float] = {}
        self.rates: dict[str, float] = {}
        # Rates follow from ready replicas and running sequences: recomputed only when those change.
        self.rates_stale = True
        self.deadlines: list[tuple[float, int]] = []
        self.gpu_seconds = 0.0
        self.timeline: list[TimelinePoint] = []
        self.decisions: list[str] = []
        self.state: dict[str, Any] = {}
        # What a replica measures between metrics refreshes.
        self.served_since_tick = 0.0
        self.busy_since_tick = 0.0
        self.seq_s_since_tick = 0.0
        self.replica_s_since_tick = 0.0
        self.meter = ThroughputMeter(
            self.pool.max_seqs_per_replica, window_s=max(self.pool.metrics_interval_s, EPS)
        )
        self.metrics = Metrics(at=-math.inf)
        self.ongoing_samples: list[tuple[float, float]] = []
        # Reasoning tokens admitted per inflow bucket (the registry's `inflow` hash).
        self.inflow: dict[int, int] = {}

    # ---- what policies read -----------------------------------------------------------

    def mean_ongoing(self, since: float) -> float:
        """Ongoing requests averaged over the samples taken at or after `since` (0 for none)."""
        values = []
        for at, value in reversed(self.ongoing_samples):
            if at < since:
                break
            values.append(value)
        return sum(values) / len(values) if values else 0.0

    # ---- pool mechanics ---------------------------------------------------------------

    def advance(self, until: float) -> None:
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
            self.seq_s_since_tick += self.seqs * dt
        self.gpu_seconds += (self.ready + len(self.starting)) * dt
        self.now = until

    def next_completion(self) -> float:
        best = math.inf
        for name, heap in self.finishing.items():
            while heap and self.jobs[heap[0][1]].done:
                heapq.heappop(heap)
            rate = self.rates.get(name, 0.0)
            if heap and rate > 0:
                at = self.now + max(heap[0][0] - self.vclock.get(name, 0.0), 0.0) / rate
                if at < best:
                    best = at
        return best

    def next_deadline(self) -> float:
        while self.deadlines and self.jobs[self.deadlines[0][1]].done:
            heapq.heappop(self.deadlines)
        return self.deadlines[0][0] if self.deadlines else math.inf

    def next_ready(self) -> float:
        return self.starting[0] if self.starting else math.inf

    def complete_finished(self) -> None:
        for name, heap in self.finishing.items():
            clock = self.vclock.get(name, 0.0)
            while heap and (self.jobs[heap[0][1]].done or heap[0][0] - clock <= FINISH_TOLERANCE):
                job = self.jobs[heapq.heappop(heap)[1]]
                if not job.done:
                    self._finish(job, missed=False)

    def cancel_expired(self, t: float) -> None:
        while self.deadlines and self.deadlines[0][0] <= t + EPS:
            job = self.jobs[heapq.heappop(self.deadlines)[1]]
            if not job.done:
                self._finish(job, missed=True)

    def bring_up_started(self, t: float) -> None:
        while self.starting and self.starting[0] <= t + EPS:
            self.starting.popleft()
            self.ready += 1
            self.rates_stale = True

    def arrive(self, arrival: float, effort: str, tokens: int) -> None:
        profile = self.trace.efforts[effort]
        index = len(self.jobs)
        deadline_at = arrival + profile.deadline_s
        key = str(index)
        entry = InFlight(key, key, "sim", effort, tokens, 0, deadline_at, arrival)
        job = Job(index, arrival, effort, tokens, deadline_at, profile.branches, entry)
        self.jobs.append(job)
        self._record_inflow(arrival, tokens)
        self.queue.append(job)
        self.waiting += 1
        heapq.heappush(self.deadlines, (deadline_at, index))

    def _record_inflow(self, arrival: float, tokens: int) -> None:
        bucket = inflow_bucket(arrival)
        if bucket not in self.inflow:
            # Buckets before the window of any later reading are never read again.
            oldest = bucket - INFLOW_WINDOW_S // INFLOW_BUCKET_S
            for old in [b for b in self.inflow if b < oldest]:
                del self.inflow[old]
        self.inflow[bucket] = self.inflow.get(bucket, 0) + tokens

    def start_waiting(self) -> None:
        limit = self.ready * self.pool.max_seqs_per_replica
        while self.queue:
            head = self.queue[0]
            if head.done:
                self.queue.popleft()
                continue
            if self.seqs + head.branches > limit:
                break
            self.queue.popleft()
            self.waiting -= 1
            head.started = self.now
            head.finish_v = self.vclock.get(head.effort, 0.0) + head.tokens
            heapq.heappush(self.finishing.setdefault(head.effort, []), (head.finish_v, head.index))
            self.counts[head.effort] = self.counts.get(head.effort, 0) + 1
            self.running[head.index] = head
            self.seqs += head.branches
            self.rates_stale = True

    def recompute_rates(self) -> None:
        if not self.rates_stale:
            return
        self.rates_stale = False
        # Continuous batching: every running sequence decodes at the same speed.
        capacity = self.ready * self.pool.replica_tokens_per_s
        per_seq = min(self.pool.seq_tokens_per_s, capacity / self.seqs) if self.seqs else 0.0
        self.rates = {
            name: self.trace.efforts[name].branches * per_seq for name, n in self.counts.items() if n > 0
        }

    def _finish(self, job: Job, missed: bool) -> None:
        job.done = True
        job.missed = missed
        if not missed:
            job.finished_at = self.now
        if job.index in self.running:
            del self.running[job.index]
            self.counts[job.effort] -= 1
            self.seqs -= job.branches
            self.rates_stale = True
        else:
            self.waiting -= 1

    def set_target(self, target: int) -> None:
        self.target = target
        have = self.ready + len(self.starting)
        if target > have:
            self.starting.extend([self.now + self.pool.startup_s] * (target - have))
        while target < self.ready + len(self.starting) and self.starting:
            self.starting.pop()  # the latest asked for goes first
        if target < self.ready:
            self.ready = max(target, 0)
            self.rates_stale = True

    def refresh_metrics(self) -> None:
        """What replicas would report now: throughput (into the meter) and ongoing requests."""
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
        ongoing = float(len(self.running) + self.waiting)
        self.ongoing_samples.append((self.now, ongoing))
        self.metrics = Metrics(at=self.now)

    def record(self, t: float) -> None:
        self.timeline.append(
            TimelinePoint(t, self.ready, len(self.starting), self.target, len(self.running), self.waiting)
        )

    def result(self, policy_name: str) -> SimResult:
        answered = [j.finished_at - j.arrival for j in self.jobs if j.finished_at is not None]
        misses_by_effort: dict[str, int] = {name: 0 for name in self.trace.efforts}
        for job in self.jobs:
            if job.missed:
                misses_by_effort[job.effort] += 1
        return SimResult(
            policy=policy_name,
            requests=len(self.jobs),
            answered=len(answered),
            misses=sum(misses_by_effort.values()),
            p50_s=percentile(answered, 50),
            p95_s=percentile(answered, 95),
            gpu_hours=self.gpu_seconds / 3600,
            timeline=self.timeline,
            misses_by_effort=misses_by_effort,
            decisions=self.decisions,
            end_s=self.end_s,
        )


# A policy sees the simulation and the time and returns the new target.
PolicyFn = Callable[[Simulation, float], int]


def simulate(trace: Trace, policy_name: str, policy: PolicyFn, end_s: float | None = None) -> SimResult:
    """Run `policy` over `trace`: the event loop, from one event to the next."""
    sim = Simulation(trace, end_s)
    arrivals = deque(trace.requests)
    next_tick = 0.0
    while True:
        next_arrival = arrivals[0].arrival if arrivals else math.inf
        completion = sim.next_completion()
        deadline = sim.next_deadline()
        t = min(next_arrival, completion, deadline, sim.next_ready(), next_tick)
        if t > sim.end_s:
            sim.advance(sim.end_s)
            break
        sim.advance(t)
        if completion <= t + EPS:
            sim.complete_finished()
        if deadline <= t + EPS:
            sim.cancel_expired(t)
        sim.bring_up_started(t)
        while arrivals and arrivals[0].arrival <= t + EPS:
            item = arrivals.popleft()
            sim.arrive(item.arrival, item.effort, item.tokens)
        if next_tick <= t + EPS:
            if t - sim.metrics.at + EPS >= sim.pool.metrics_interval_s:
                sim.refresh_metrics()
            sim.set_target(policy(sim, t))
            sim.record(t)
            next_tick = t + sim.pool.control_interval_s
        sim.start_waiting()
        sim.recompute_rates()
    return sim.result(policy_name)
