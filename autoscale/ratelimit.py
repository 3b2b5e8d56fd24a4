"""Per-caller request rate limits: token buckets in Redis, shared by every gateway replica.

Each tenant (and each ops identity) has one bucket per kind of call: `requests` (chat
completions) and `reads` (trees and their events). A bucket holds up to `burst` tokens and
refills at `per_s`; a call takes one token or is refused with the time until one is back,
which the gateway sends as Retry-After. The bucket is one Lua script on Redis' own clock,
so replicas with skewed clocks share it correctly.
"""

from __future__ import annotations

import math
from typing import Literal

from redis.asyncio import Redis

from cluster.config import RateLimit, RateLimitSettings

LimitKind = Literal["requests", "reads"]

# KEYS: the bucket hash. ARGV: refill per second, burst. Returns {1|0, seconds until a token}.
_TAKE_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1e6
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local taken = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  taken = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'at', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {taken, string.format('%.3f', wait)}
"""


class RateLimited(Exception):
    """Answered as 429 with `Retry-After: retry_after_s`."""

    def __init__(self, caller: str, kind: LimitKind, limit: RateLimit, retry_after_s: int) -> None:
        super().__init__(
            f"{caller!r} sent {kind} faster than its limit of {limit.per_s:g} per second "
            f"(bursts of {limit.burst}); retry after {retry_after_s} s"
        )
        self.message = str(self)
        self.retry_after_s = retry_after_s


class RateLimiter:
    def __init__(self, redis: Redis, settings: RateLimitSettings, prefix: str = "rc") -> None:
        self._settings = settings
        self._prefix = prefix
        self._take = redis.register_script(_TAKE_LUA)

    def limit_for(self, caller: str, kind: LimitKind) -> RateLimit:
        if kind == "reads":
            return self._settings.reads
        return self._settings.tenant_requests.get(caller, self._settings.requests)

    async def take(self, caller: str, kind: LimitKind) -> None:
        """Take one token from the caller's bucket, or raise RateLimited."""
        if not self._settings.enabled:
            return
        limit = self.limit_for(caller, kind)
        key = f"{self._prefix}:ratelimit:{kind}:{caller}"
        taken, wait_s = await self._take(keys=[key], args=[repr(limit.per_s), str(limit.burst)])
        if not int(taken):
            raise RateLimited(caller, kind, limit, max(1, math.ceil(float(wait_s))))
