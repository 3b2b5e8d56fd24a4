"""Planner leases: at most one planner runs the search of a tree at a time.

A lease is a Redis key holding its holder's token with a short TTL that the holder keeps
renewing. A planner that dies stops renewing, the key expires, and the replacement planner
that resumes the tree takes it over. A holder that fails to renew (it was partitioned away,
or stalled past the TTL) must stop: someone else may own the tree by now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError

from cluster.store.keys import KeySpace

_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# How often a holder renews, as a fraction of the TTL: two renewals may fail before it expires.
_RENEW_FRACTION = 1 / 3
_ACQUIRE_POLL_S = 0.2

logger = logging.getLogger(__name__)


class LeaseBusyError(RuntimeError):
    """Another planner holds the tree's lease and kept it for as long as we waited."""


class LeaseLostError(RuntimeError):
    """The holder could not renew its lease in time; another planner may own the tree."""


@dataclass(slots=True)
class Lease:
    tree_id: str
    token: str
    lost: bool = field(default=False)


class TreeLeases:
    def __init__(self, redis: Redis, keys: KeySpace | None = None, ttl_s: float = 5.0) -> None:
        if ttl_s <= 0:
            raise ValueError(f"lease ttl_s must be positive, got {ttl_s!r}")
        self._redis = redis
        self._keys = keys or KeySpace()
        self._ttl_ms = max(int(ttl_s * 1000), 1)
        self._renew = redis.register_script(_RENEW_LUA)
        self._release = redis.register_script(_RELEASE_LUA)

    @property
    def ttl_s(self) -> float:
        return self._ttl_ms / 1000

    async def acquire(self, tree_id: str, holder: str, wait_s: float = 0.0) -> Lease:
        """Take the lease, waiting up to `wait_s` for a previous holder's to expire."""
        token = f"{holder}:{uuid.uuid4().hex}"
        key = self._keys.tree(tree_id).lease
        deadline = asyncio.get_running_loop().time() + wait_s
        while not await self._redis.set(key, token, nx=True, px=self._ttl_ms):
            if asyncio.get_running_loop().time() >= deadline:
                owner = await self._redis.get(key)
                raise LeaseBusyError(f"tree {tree_id!r} is being searched by another planner ({owner!r})")
            await asyncio.sleep(_ACQUIRE_POLL_S)
        return Lease(tree_id, token)

    async def renew(self, lease: Lease) -> bool:
        key = self._keys.tree(lease.tree_id).lease
        return bool(int(await self._renew(keys=[key], args=[lease.token, str(self._ttl_ms)])))

    async def release(self, lease: Lease) -> None:
        await self._release(keys=[self._keys.tree(lease.tree_id).lease], args=[lease.token])

    @contextlib.asynccontextmanager
    async def hold(self, tree_id: str, holder: str, wait_s: float = 0.0) -> AsyncIterator[Lease]:
        """Hold the lease for the block, renewing it; a lost lease cancels the block's task.

        The block sees a lost lease as cancellation with `lease.lost` set, and must then
        leave the tree to its new owner.
        """
        lease = await self.acquire(tree_id, holder, wait_s)
        renewer = asyncio.create_task(self._keep(lease, asyncio.current_task()))
        try:
            yield lease
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            if not lease.lost:
                await asyncio.shield(self.release(lease))

    async def _keep(self, lease: Lease, holder: asyncio.Task[object] | None) -> None:
        loop = asyncio.get_running_loop()
        renewed_at = loop.time()
        while True:
            await asyncio.sleep(self.ttl_s * _RENEW_FRACTION)
            try:
                held = await self.renew(lease)
            except (RedisError, OSError):
                # A blip is survivable until the TTL would have run out since the last renewal.
                logger.warning("could not renew the lease of tree %s", lease.tree_id, exc_info=True)
                held = loop.time() - renewed_at < self.ttl_s
            else:
                renewed_at = loop.time() if held else renewed_at
            if not held:
                lease.lost = True
                if holder is not None:
                    holder.cancel()
                return
