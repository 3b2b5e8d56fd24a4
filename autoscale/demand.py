"""The demand model: reasoning budget in flight, turned into what each deployment faces.

Every request the gateway admits is registered in Redis with its effort's budget (reasoning
tokens, verifier calls) and its deadline; what it has spent is read from the tree's budget
ledger (`cluster.store.budget`), which the planner's search pays into for every engine call.
From these:

- branch-generators face `tokens still to generate / seconds left before the deadline`,
  summed over trees (tokens per second the engines must sustain);
- verifiers face the verifier calls still open in the trees' budgets;
- planners face the number of trees in flight.

Each generator replica measures its own engine throughput online (`ThroughputMeter`), so a
policy turns tokens per second of demand into replicas without a hand-tuned constant; the
meters also publish to Redis so the gateway's admission control can project waits.

All registry keys share one hash tag, so the Lua scripts of `autoscale.admission` work on
Redis Cluster too.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from cluster.store import KeySpace
from cluster.store.keys import as_text

TOKENS = "tokens"
INFLOW_BUCKET_S = 10
INFLOW_WINDOW_S = 60
VERIFIER_CALLS = "verifier_calls"


@dataclass(frozen=True, slots=True)
class RegistryKeys:
    """Keys of the in-flight registry (one Redis Cluster slot: the `{...}` tag)."""

    prefix: str = "rc"

    def _key(self, suffix: str) -> str:
        return f"{self.prefix}:{{autoscale}}:{suffix}"

    @property
    def inflight(self) -> str:
        """Hash: entry id -> JSON of an admitted request (`InFlight`)."""
        return self._key("inflight")

    @property
    def queued(self) -> str:
        """Hash: entry id -> JSON of a request waiting for admission."""
        return self._key("queued")

    @property
    def tenants(self) -> str:
        """Hash: tenant -> reasoning tokens it has in flight."""
        return self._key("tenants")

    @property
    def expiry(self) -> str:
        """Sorted set: entry id -> time after which a dead gateway's entry is dropped."""
        return self._key("expiry")

    @property
    def inflow(self) -> str:
        """Hash: time bucket (INFLOW_BUCKET_S wide) -> reasoning tokens admitted in it."""
        return self._key("inflow")

    @property
    def throughput(self) -> str:
        """Hash: generator replica -> JSON {tokens_per_s, at} (its online measurement)."""
        return self._key("throughput")


@dataclass(frozen=True, slots=True)
class InFlight:
    """One request in the registry: its budget and deadline."""

    entry_id: str
    tree_id: str
    tenant: str
    effort: str
    tokens: int
    verifier_calls: int
    deadline_at: float
    registered_at: float

    def to_json(self) -> str:
        return json.dumps(
            {
                "entry_id": self.entry_id,
                "tree_id": self.tree_id,
                "tenant": self.tenant,
                "effort": self.effort,
                "tokens": self.tokens,
                "verifier_calls": self.verifier_calls,
                "deadline_at": self.deadline_at,
                "registered_at": self.registered_at,
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> InFlight:
        data = json.loads(raw)
        return cls(
            entry_id=str(data["entry_id"]),
            tree_id=str(data["tree_id"]),
            tenant=str(data["tenant"]),
            effort=str(data["effort"]),
            tokens=int(data["tokens"]),
            verifier_calls=int(data["verifier_calls"]),
            deadline_at=float(data["deadline_at"]),
            registered_at=float(data["registered_at"]),
        )


@dataclass(frozen=True, slots=True)
class Spent:
    tokens: int = 0
    verifier_calls: int = 0


NOTHING_SPENT = Spent()


@dataclass(frozen=True, slots=True)
class Demand:
    """What the cluster faces at one instant."""

    at: float
    active_trees: int = 0
    queued_trees: int = 0
    # Reasoning tokens still to generate: admitted (granted - spent) plus queued (whole budget).
    tokens_remaining: int = 0
    # Sum over trees of tokens remaining / seconds to its deadline (floored at min_slack_s).
    deadline_tokens_per_s: float = 0.0
    # Reasoning budget admitted per second over the last INFLOW_WINDOW_S: in steady state the
    # engines must generate at least this much, whatever the deadlines.
    inflow_tokens_per_s: float = 0.0
    pending_verifications: int = 0
    tokens_in_flight_by_tenant: dict[str, int] = field(default_factory=dict)
    # Generator capacity measured by the replicas themselves (0 when none has measured yet).
    capacity_tokens_per_s: float = 0.0
    measured_replicas: int = 0

    @property
    def tokens_per_s(self) -> float:
        """What the generators must sustain: the larger of the deadline rate and the inflow."""
        return max(self.deadline_tokens_per_s, self.inflow_tokens_per_s)

    def projected_wait_s(self, extra_tokens: int = 0) -> float | None:
        """Seconds until the backlog plus `extra_tokens` is generated; None without a measurement."""
        if self.capacity_tokens_per_s <= 0:
            return None
        return (self.tokens_remaining + extra_tokens) / self.capacity_tokens_per_s

    def as_metrics(self) -> dict[str, float]:
        return {
            "demand_tokens_per_s": float(self.tokens_per_s),
            "deadline_tokens_per_s": float(self.deadline_tokens_per_s),
            "inflow_tokens_per_s": float(self.inflow_tokens_per_s),
            "tokens_remaining": float(self.tokens_remaining),
            "active_trees": float(self.active_trees),
            "queued_trees": float(self.queued_trees),
            "pending_verifications": float(self.pending_verifications),
        }


def compute_demand(
    admitted: Iterable[InFlight],
    queued: Iterable[InFlight],
    spent: Mapping[str, Spent],
    now: float,
    min_slack_s: float,
    capacity_tokens_per_s: float = 0.0,
    measured_replicas: int = 0,
    inflow_tokens_per_s: float = 0.0,
) -> Demand:
    """The demand model as a pure function (the simulator and the deployments share it)."""
    if min_slack_s <= 0:
        raise ValueError(f"min_slack_s must be positive, got {min_slack_s}")
    trees = waiting = remaining_total = verifications = 0
    rate = 0.0
    by_tenant: dict[str, int] = {}
    for entry in admitted:
        used = spent.get(entry.tree_id, NOTHING_SPENT)
        remaining = max(entry.tokens - used.tokens, 0)
        trees += 1
        remaining_total += remaining
        verifications += max(entry.verifier_calls - used.verifier_calls, 0)
        rate += remaining / max(entry.deadline_at - now, min_slack_s)
        by_tenant[entry.tenant] = by_tenant.get(entry.tenant, 0) + entry.tokens
    for entry in queued:
        waiting += 1
        remaining_total += entry.tokens
        verifications += entry.verifier_calls
        rate += entry.tokens / max(entry.deadline_at - now, min_slack_s)
    return Demand(
        at=now,
        active_trees=trees,
        queued_trees=waiting,
        tokens_remaining=remaining_total,
        deadline_tokens_per_s=rate,
        inflow_tokens_per_s=inflow_tokens_per_s,
        pending_verifications=verifications,
        tokens_in_flight_by_tenant=by_tenant,
        capacity_tokens_per_s=capacity_tokens_per_s,
        measured_replicas=measured_replicas,
    )


class DemandReader:
    """Reads the registry, the trees' ledgers and the replicas' throughput from Redis."""

    def __init__(
        self,
        redis: Redis,
        prefix: str = "rc",
        min_slack_s: float = 2.0,
        throughput_stale_s: float = 120.0,
    ) -> None:
        self._redis = redis
        self.keys = RegistryKeys(prefix)
        self._trees = KeySpace(prefix)
        self._min_slack_s = min_slack_s
        self._stale_s = throughput_stale_s

    async def read(self, now: float | None = None) -> Demand:
        now = time.time() if now is None else now
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.inflight)
        pipe.hgetall(self.keys.queued)
        pipe.hgetall(self.keys.throughput)
        pipe.hgetall(self.keys.inflow)
        raw_inflight, raw_queued, raw_throughput, raw_inflow = await pipe.execute()
        admitted = [InFlight.from_json(v) for v in raw_inflight.values()]
        queued = [InFlight.from_json(v) for v in raw_queued.values()]
        spent = await self._spent(admitted)
        capacity, measured = fresh_capacity(raw_throughput, now, self._stale_s)
        inflow = inflow_rate(raw_inflow, now)
        return compute_demand(admitted, queued, spent, now, self._min_slack_s, capacity, measured, inflow)

    async def _spent(self, entries: list[InFlight]) -> dict[str, Spent]:
        if not entries:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for entry in entries:
            pipe.hmget(self._trees.tree(entry.tree_id).budget, f"spent:{TOKENS}", f"spent:{VERIFIER_CALLS}")
        rows = await pipe.execute()
        return {
            entry.tree_id: Spent(_int(tokens), _int(calls))
            for entry, (tokens, calls) in zip(entries, rows, strict=True)
        }


def fresh_capacity(raw: Mapping[Any, Any], now: float, stale_s: float) -> tuple[float, int]:
    """Sum of the throughputs replicas published within `stale_s`, and how many did."""
    total = 0.0
    count = 0
    for value in raw.values():
        data = json.loads(as_text(value))
        if now - float(data["at"]) <= stale_s and float(data["tokens_per_s"]) > 0:
            total += float(data["tokens_per_s"])
            count += 1
    return total, count


def inflow_bucket(now: float) -> int:
    return int(now // INFLOW_BUCKET_S)


def inflow_rate(raw: Mapping[Any, Any], now: float) -> float:
    """Tokens admitted per second: the larger of the last bucket's rate and the rate over the
    last INFLOW_WINDOW_S (whole buckets before now's), so a surge shows within one bucket and
    a lull does not hide the load of the past minute."""
    current = inflow_bucket(now)
    first = current - INFLOW_WINDOW_S // INFLOW_BUCKET_S
    buckets = {int(as_text(k)): int(as_text(v)) for k, v in raw.items()}
    window = sum(v for k, v in buckets.items() if first <= k < current) / INFLOW_WINDOW_S
    last = buckets.get(current - 1, 0) / INFLOW_BUCKET_S
    return max(window, last)


def _int(value: Any) -> int:
    return int(as_text(value)) if value is not None else 0


class ThroughputMeter:
    """A replica's engine capacity in tokens/s, measured online from its own generate calls.

    Busy time is wall time with at least one call in flight; every `window_s` of it closes a
    sample: tokens completed / busy seconds (`rate`), and sequences in flight on average
    (`load`). A batching engine is only as fast as its load lets it be, so:

    - while per-sequence speed (rate / load) stays at the best seen, the engine is not yet
      compute-bound and its capacity is extrapolated to a full batch
      (`rate * max_seqs / load`): an optimistic bound, which packs replicas until they load up;
    - once per-sequence speed drops below `saturation` of the best, the engine is compute-bound
      and `rate` is its capacity; from then on only such samples move the estimate (EWMA).

    Optimism corrects itself (fewer replicas load them, which reveals the true capacity);
    pessimism would not (more replicas stay lightly loaded and keep looking slow).

    Only calls that generate measure it (`measures`): a call of a few tokens after a long
    prompt (a model judge's one token) is bound by its prefill and would make a fast engine
    look slow (6 tokens/s measured on one that generates 115).
    """

    # Calls allowed fewer tokens than this are prefill-bound: they stay out of the measure.
    MIN_CALL_TOKENS = 8

    def __init__(
        self, max_seqs: int = 256, window_s: float = 2.0, alpha: float = 0.5, saturation: float = 0.9
    ) -> None:
        if window_s <= 0 or not 0 < alpha <= 1 or max_seqs < 1 or not 0 < saturation < 1:
            raise ValueError("need window_s > 0, 0 < alpha <= 1, max_seqs >= 1, 0 < saturation < 1")
        self.max_seqs = max_seqs
        self.window_s = window_s
        self.alpha = alpha
        self.saturation = saturation
        self.tokens_per_s: float | None = None
        self.saturated = False
        self.best_seq_speed = 0.0
        self.samples = 0
        self._in_flight = 0
        self._seqs = 0
        self._last: float | None = None
        self._busy_s = 0.0
        self._seq_s = 0.0
        self._tokens = 0.0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @staticmethod
    def measures(max_tokens: int) -> bool:
        """Whether a call allowed `max_tokens` tokens per sequence counts towards the measure."""
        return max_tokens >= ThroughputMeter.MIN_CALL_TOKENS

    def _tick(self, now: float) -> None:
        if self._last is not None and self._in_flight:
            self._busy_s += now - self._last
            self._seq_s += self._seqs * (now - self._last)
        self._last = now

    def begin(self, seqs: int = 1, now: float | None = None) -> None:
        self._tick(time.monotonic() if now is None else now)
        self._in_flight += 1
        self._seqs += max(seqs, 1)

    def end(self, tokens: int, seqs: int = 1, now: float | None = None) -> None:
        self._tick(time.monotonic() if now is None else now)
        self._in_flight = max(self._in_flight - 1, 0)
        self._seqs = max(self._seqs - max(seqs, 1), 0)
        self._tokens += max(tokens, 0)
        self._roll()

    def observe(self, tokens: float, busy_s: float, seq_s: float) -> None:
        """Record `tokens` generated in `busy_s` busy seconds with `seq_s` sequence-seconds."""
        self._tokens += tokens
        self._busy_s += busy_s
        self._seq_s += seq_s
        self._roll()

    def _roll(self) -> None:
        if self._busy_s < self.window_s or self._tokens <= 0 or self._seq_s <= 0:
            return
        rate = self._tokens / self._busy_s
        load = self._seq_s / self._busy_s
        self._tokens = self._busy_s = self._seq_s = 0.0
        self.samples += 1
        speed = rate / load
        self.best_seq_speed = max(self.best_seq_speed, speed)
        if speed < self.saturation * self.best_seq_speed:
            if not self.saturated or self.tokens_per_s is None:
                self.tokens_per_s = rate
            else:
                self.tokens_per_s += self.alpha * (rate - self.tokens_per_s)
            self.saturated = True
        elif not self.saturated:
            self.tokens_per_s = self.best_seq_speed * self.max_seqs

    def estimate(self, prior: float) -> float:
        return self.tokens_per_s if self.tokens_per_s is not None else prior


def throughput_record(tokens_per_s: float, now: float | None = None) -> str:
    return json.dumps({"tokens_per_s": tokens_per_s, "at": time.time() if now is None else now})


def ceil_div(amount: float, per: float) -> int:
    return max(math.ceil(amount / per - 1e-9), 0) if per > 0 else 0


class DemandProbe:
    """What a replica's `record_autoscaling_stats()` reports: the cluster demand, read from Redis
    at most every `ttl_s`, and (for generators) the replica's own measured throughput, which it
    also publishes for the gateway's admission control."""

    def __init__(self, redis: Redis | None, prefix: str, min_slack_s: float, ttl_s: float = 1.0) -> None:
        self._redis = redis
        self._reader = DemandReader(self._redis, prefix, min_slack_s) if self._redis is not None else None
        self._ttl_s = ttl_s
        self._cached: Demand | None = None

    async def demand(self) -> Demand:
        now = time.time()
        if self._reader is None:
            return Demand(at=now)
        if self._cached is None or now - self._cached.at >= self._ttl_s:
            self._cached = await self._reader.read(now)
        return self._cached

    async def publish_throughput(self, replica: str, tokens_per_s: float | None) -> None:
        if self._redis is None or self._reader is None or tokens_per_s is None:
            return
        await self._redis.hset(self._reader.keys.throughput, replica, throughput_record(tokens_per_s))

    async def forget_replica(self, replica: str) -> None:
        if self._redis is not None and self._reader is not None:
            await self._redis.hdel(self._reader.keys.throughput, replica)
