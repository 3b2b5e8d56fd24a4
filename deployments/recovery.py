"""What a request leaves to finish once Redis answers again, done in the background.

When Redis stops, is killed or restarts, a request fails fast (503) but may leave state behind
that no one else will clean up: its admission entry, and its tree `running` with budget still
reserved (its planner stopped without being able to mark it). The gateway that answered the
request hands both here; they are retried until Redis answers, or until the tree would have
expired anyway, so after an outage no tree stays `running` and the admission registry empties.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from autoscale.admission import Admission, AdmissionController
from cluster.store import BudgetLedger, TreeNotFoundError, TreeStore

logger = logging.getLogger(__name__)

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)
# How often a pending clean-up tries again.
RETRY_S = 1.0


class Recovery:
    def __init__(
        self,
        redis: Redis,
        store: TreeStore,
        ledger: BudgetLedger,
        tree_ttl_s: int,
        give_up_s: float,
    ) -> None:
        self._redis = redis
        self._store = store
        self._ledger = ledger
        self._tree_ttl_s = tree_ttl_s
        self._give_up_s = give_up_s
        self._pending: set[asyncio.Task[None]] = set()

    def release_admission(self, admission: AdmissionController, entry: Admission) -> None:
        async def release() -> bool:
            await admission.release(entry)
            return True

        self._retry(f"admission {entry.entry_id}", release)

    def end_abandoned_tree(self, tree_id: str, why: str) -> None:
        """Mark the tree failed and return its reservations, once no planner holds it."""

        async def end() -> bool:
            meta = await self._store.get_meta(tree_id)
            if meta is None or meta.status != "running":
                return True
            if await self._redis.exists(self._store.keys(tree_id).lease):
                return False  # a planner still holds it (or its lease has not expired yet)
            try:
                await self._ledger.void_reservations(tree_id)
                await self._store.finish_tree(tree_id, "failed", (), self._tree_ttl_s)
                await self._store.append_event(tree_id, "failed", {"error": why})
            except TreeNotFoundError:
                return True  # expired meanwhile: nothing is left to end
            logger.info("ended abandoned tree %s: %s", tree_id, why)
            return True

        self._retry(f"tree {tree_id}", end)

    def _retry(self, what: str, attempt: Callable[[], Awaitable[bool]]) -> None:
        task = asyncio.create_task(self._until_done(what, attempt))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _until_done(self, what: str, attempt: Callable[[], Awaitable[bool]]) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._give_up_s
        while loop.time() < give_up:
            try:
                done = await attempt()
            except REDIS_DOWN:
                done = False  # Redis is still away
            if done:
                return
            await asyncio.sleep(RETRY_S)
        logger.error("gave up cleaning up %s after %.0f s; it expires by its TTL", what, self._give_up_s)
