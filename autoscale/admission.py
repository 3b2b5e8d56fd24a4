"""Admission control: per-tenant ceilings on reasoning tokens in flight, deadline-aware.

The gateway registers every request it runs in Redis (`autoscale.demand.RegistryKeys`):
that registry is both the admission state (shared by every gateway replica; admission and
release are atomic Lua scripts) and the demand model's input. A request is admitted when
its tenant stays under its ceiling and the projected wait (backlog plus its own budget over
the generators' measured throughput) fits its deadline. Otherwise, by config:

- `degrade`: run it one effort lower (recorded on the response and on the tree), if that
  level fits; if not, reject;
- `queue`: wait (registered as queued, so the autoscaler sees it) until it fits, at most
  `max_queue_wait_s` and never past the point where its deadline could still be met;
- `reject`: 429 at once.

A rejection always carries a Retry-After computed from the demand model. Nothing is dropped
silently: a request is admitted, degraded, or answered 429. `release` is idempotent and the
gateway calls it in a `finally`; entries of a gateway that died are dropped after their
deadline (plus `stale_after_deadline_s`) by the next admission.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from autoscale.demand import (
    INFLOW_BUCKET_S,
    INFLOW_WINDOW_S,
    Demand,
    DemandReader,
    InFlight,
    RegistryKeys,
    inflow_bucket,
)
from cluster.config import AdmissionSettings
from cluster.types import Effort

# KEYS: inflight, tenants, expiry, queued, inflow. ARGV: entry id, tenant, tokens, ceiling
# (-1: none), entry JSON, expire at, now, inflow bucket, oldest bucket kept.
# Returns {status, tenant tokens in flight}: 1 admitted,
# 0 over the ceiling, -1 the entry exists.
_PRUNE = """
local stale = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[7])
for _, id in ipairs(stale) do
  local raw = redis.call('HGET', KEYS[1], id)
  if raw then
    local e = cjson.decode(raw)
    if redis.call('HINCRBY', KEYS[2], e['tenant'], -tonumber(e['tokens'])) <= 0 then
      redis.call('HDEL', KEYS[2], e['tenant'])
    end
    redis.call('HDEL', KEYS[1], id)
  end
  redis.call('HDEL', KEYS[4], id)
  redis.call('ZREM', KEYS[3], id)
end
"""

# Drops entries of gateways that died (KEYS as below; ARGV[7]: now). Returns nothing useful.
_PRUNE_LUA = _PRUNE + "return 1\n"

_ADMIT_LUA = (
    _PRUNE
    + """
local used = tonumber(redis.call('HGET', KEYS[2], ARGV[2])) or 0
local tokens = tonumber(ARGV[3])
local ceiling = tonumber(ARGV[4])
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {-1, used} end
if ceiling >= 0 and used + tokens > ceiling then return {0, used} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[5])
redis.call('HINCRBY', KEYS[2], ARGV[2], tokens)
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('HINCRBY', KEYS[5], ARGV[8], tokens)
for _, bucket in ipairs(redis.call('HKEYS', KEYS[5])) do
  if tonumber(bucket) < tonumber(ARGV[9]) then redis.call('HDEL', KEYS[5], bucket) end
end
return {1, used + tokens}
"""
)

# KEYS: inflight, tenants, expiry, queued. ARGV: entry id. Returns tokens released (0: none).
_RELEASE_LUA = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local freed = 0
if raw then
  local e = cjson.decode(raw)
  freed = tonumber(e['tokens'])
  local left = redis.call('HINCRBY', KEYS[2], e['tenant'], -freed)
  if left <= 0 then redis.call('HDEL', KEYS[2], e['tenant']) end
  redis.call('HDEL', KEYS[1], ARGV[1])
end
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return freed
"""


@dataclass(frozen=True, slots=True)
class EffortCost:
    """What running a request at one effort would hold."""

    tokens: int
    verifier_calls: int
    deadline_s: float


@dataclass(frozen=True, slots=True)
class Admission:
    entry_id: str
    effort: Effort
    requested_effort: Effort
    queued_s: float
    reason: str

    @property
    def degraded(self) -> bool:
        return self.effort != self.requested_effort

    def to_dict(self) -> dict[str, object]:
        return {
            "requested_effort": self.requested_effort.value,
            "effort": self.effort.value,
            "degraded": self.degraded,
            "queued_s": round(self.queued_s, 3),
            "reason": self.reason,
        }


class AdmissionRejected(Exception):
    """Answered as 429 with `Retry-After: retry_after_s`."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class TicketExists(Exception):
    pass


def lower_effort(effort: Effort) -> Effort | None:
    order = list(Effort)
    index = order.index(effort)
    return order[index - 1] if index > 0 else None


@dataclass(frozen=True, slots=True)
class Verdict:
    fits: bool
    why: str
    retry_after_s: float


def judge(
    demand: Demand,
    tenant: str,
    cost: EffortCost,
    ceiling: int | None,
    waited_s: float = 0.0,
    now: float | None = None,
) -> Verdict:
    """Would this request fit now? If not, why, and when it could (the demand model's estimate)."""
    now = demand.at if now is None else now
    used = demand.tokens_in_flight_by_tenant.get(tenant, 0)
    if ceiling is not None and used + cost.tokens > ceiling:
        excess = used + cost.tokens - ceiling
        return Verdict(
            False,
            f"tenant {tenant!r} has {used} reasoning tokens in flight; {cost.tokens} more would pass "
            f"its ceiling of {ceiling}",
            _drain_time(demand, tenant, excess, fallback_s=cost.deadline_s),
        )
    projected = demand.projected_wait_s(cost.tokens)
    left = cost.deadline_s - waited_s
    if projected is not None and projected > left:
        capacity = demand.capacity_tokens_per_s
        return Verdict(
            False,
            f"projected wait {projected:.1f} s ({demand.tokens_remaining} tokens ahead at "
            f"{capacity:.0f} tokens/s) would miss the {cost.deadline_s:g} s deadline",
            (projected - left) if capacity > 0 else cost.deadline_s,
        )
    return Verdict(True, "fits", 0.0)


def _drain_time(demand: Demand, tenant: str, excess: int, fallback_s: float) -> float:
    """Seconds until the tenant's in-flight work frees `excess` tokens.

    The tenant's share of the generators' measured throughput is its share of the tokens
    in flight; without a measurement, a deadline bounds it (work in flight ends by then).
    """
    total = sum(demand.tokens_in_flight_by_tenant.values())
    mine = demand.tokens_in_flight_by_tenant.get(tenant, 0)
    if demand.capacity_tokens_per_s > 0 and total > 0 and mine > 0:
        return excess / (demand.capacity_tokens_per_s * mine / total)
    return fallback_s


class AdmissionController:
    """Admits, degrades, queues or rejects requests; shared state in Redis."""

    def __init__(
        self,
        redis: Redis,
        settings: AdmissionSettings,
        prefix: str = "rc",
        min_slack_s: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self.settings = settings
        self.keys = RegistryKeys(prefix)
        self._reader = DemandReader(redis, prefix, min_slack_s)
        self._admit = redis.register_script(_ADMIT_LUA)
        self._release = redis.register_script(_RELEASE_LUA)
        self._prune = redis.register_script(_PRUNE_LUA)
        self._clock = clock

    def _script_keys(self) -> list[str]:
        return [self.keys.inflight, self.keys.tenants, self.keys.expiry, self.keys.queued]

    async def demand(self) -> Demand:
        return await self._reader.read(self._clock())

    async def admit(
        self, tenant: str, tree_id: str, effort: Effort, cost_of: Callable[[Effort], EffortCost]
    ) -> Admission:
        """Admit the request (maybe one effort lower, maybe after queueing) or raise AdmissionRejected."""
        entry_id = uuid.uuid4().hex
        started = self._clock()
        requested = effort
        ceiling = self.settings.ceiling_for(tenant) if self.settings.enabled else None
        reasons: list[str] = []
        queued = False
        await self._prune(keys=self._script_keys(), args=["", "", "", "", "", "", repr(started)])
        try:
            while True:
                cost = cost_of(effort)
                waited = self._clock() - started
                verdict = await self._verdict(tenant, cost, ceiling, waited)
                if verdict.fits:
                    ok = await self._try_admit(entry_id, tree_id, tenant, effort, cost, ceiling, started)
                    if ok:
                        reason = "; ".join(reasons) or "admitted"
                        return Admission(entry_id, effort, requested, waited, reason)
                    # The ceiling filled between the read and the script: judge again.
                    verdict = await self._verdict(tenant, cost, ceiling, waited)
                    if verdict.fits:
                        continue
                action = self.settings.on_overload
                lower = lower_effort(effort)
                if action == "degrade" and effort == requested and lower is not None:
                    reasons.append(f"degraded {effort.value}->{lower.value}: {verdict.why}")
                    effort = lower
                    continue
                budget_left = cost.deadline_s - waited
                if action == "queue" and waited < self.settings.max_queue_wait_s and budget_left > 0:
                    if not queued:
                        await self._enqueue_if_room(entry_id, tree_id, tenant, effort, cost, started, verdict)
                        queued = True
                    await asyncio.sleep(self.settings.queue_poll_s)
                    continue
                raise AdmissionRejected(self._rejection(verdict, action, waited), self._retry_after(verdict))
        finally:
            if queued:
                await self._redis.hdel(self.keys.queued, entry_id)

    async def release(self, admission: Admission | str) -> int:
        """Return the request's tokens to its tenant; safe to call twice."""
        entry_id = admission if isinstance(admission, str) else admission.entry_id
        return int(await self._release(keys=self._script_keys(), args=[entry_id]))

    async def publish_throughput(self, replica: str, record: str) -> None:
        await self._redis.hset(self.keys.throughput, replica, record)

    async def _verdict(self, tenant: str, cost: EffortCost, ceiling: int | None, waited: float) -> Verdict:
        if not self.settings.enabled:
            return Verdict(True, "admission control off", 0.0)
        return judge(await self.demand(), tenant, cost, ceiling, waited)

    async def _try_admit(
        self,
        entry_id: str,
        tree_id: str,
        tenant: str,
        effort: Effort,
        cost: EffortCost,
        ceiling: int | None,
        started: float,
    ) -> bool:
        now = self._clock()
        entry = self._entry(entry_id, tree_id, tenant, effort, cost, started, now)
        expire_at = entry.deadline_at + self.settings.stale_after_deadline_s
        bucket = inflow_bucket(now)
        status, _used = await self._admit(
            keys=[*self._script_keys(), self.keys.inflow],
            args=[
                entry_id,
                tenant,
                str(cost.tokens),
                str(-1 if ceiling is None else ceiling),
                entry.to_json(),
                repr(expire_at),
                repr(now),
                str(bucket),
                str(bucket - INFLOW_WINDOW_S // INFLOW_BUCKET_S - 1),
            ],
        )
        if int(status) == -1:
            raise TicketExists(entry_id)
        return int(status) == 1

    async def _enqueue_if_room(
        self,
        entry_id: str,
        tree_id: str,
        tenant: str,
        effort: Effort,
        cost: EffortCost,
        started: float,
        verdict: Verdict,
    ) -> None:
        """Queue the request, or reject it at once when max_queued requests already wait."""
        waiting = int(await self._redis.hlen(self.keys.queued))
        if waiting >= self.settings.max_queued:
            limit = self.settings.max_queued
            message = f"{waiting} requests are queued already (the limit is {limit}); {verdict.why}"
            raise AdmissionRejected(message, self._retry_after(verdict))
        entry = self._entry(entry_id, tree_id, tenant, effort, cost, started, self._clock())
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self.keys.queued, entry_id, entry.to_json())
        pipe.zadd(self.keys.expiry, {entry_id: entry.deadline_at + self.settings.stale_after_deadline_s})
        await pipe.execute()

    @staticmethod
    def _entry(
        entry_id: str, tree_id: str, tenant: str, effort: Effort, cost: EffortCost, started: float, now: float
    ) -> InFlight:
        return InFlight(
            entry_id,
            tree_id,
            tenant,
            effort.value,
            cost.tokens,
            cost.verifier_calls,
            started + cost.deadline_s,
            now,
        )

    def _retry_after(self, verdict: Verdict) -> int:
        estimate = verdict.retry_after_s
        if math.isnan(estimate) or estimate <= 0:
            estimate = self.settings.min_retry_after_s
        bounded = min(max(estimate, self.settings.min_retry_after_s), self.settings.max_retry_after_s)
        return math.ceil(bounded)

    def _rejection(self, verdict: Verdict, action: str, waited: float) -> str:
        how = {
            "degrade": "no lower effort fits",
            "queue": f"no room after queueing {waited:.1f} s",
            "reject": "overload policy is reject",
        }[action]
        return f"{verdict.why}; {how}; retry later or lower reasoning_effort"
