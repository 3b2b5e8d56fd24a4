"""An index of recent thought trees, for listing them (the explorer's tree list, `GET /v1/trees`).

The tree store answers "give me tree X"; listing needs "which trees exist, newest first".
The gateway adds every tree it creates here, in one atomic step:

- `{prefix}:{tree-index}:all` and `{prefix}:{tree-index}:tenant:<tenant>`: sorted sets of tree
  ids scored by creation time (ops read the first, a tenant only its own);
- `{prefix}:{tree-index}:entry:<tree_id>`: what the list filters on without reading the tree
  (owner, effort, task), expiring with the longest a tree can live.

Ids older than that TTL are trimmed from the sorted sets on every write; an id whose tree
expired earlier (a finished tree lives `redis.tree_ttl_s` after it finished) is skipped when a
read finds the tree gone. All keys share the hash tag `{tree-index}`, so the write script is
atomic on Redis Cluster too.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

from redis.asyncio import Redis

from cluster.store.keys import KeySpace, as_text
from cluster.store.tree import TreeMeta, TreeStore

INDEX_TAG = "{tree-index}"
# Ids read from Redis per round trip while a filtered listing looks for matches.
SCAN_BATCH = 200
# The most ids one listing looks at: a filter that matches nothing stops here, not at the end.
MAX_SCANNED = 5000
META_READS_AT_ONCE = 16

# KEYS: the global set, the tenant's set, the entry. ARGV: tree id, created_at, now, ttl s, entry JSON.
_ADD_LUA = """
local oldest = tonumber(ARGV[3]) - tonumber(ARGV[4])
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], ARGV[2], ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. oldest)
  redis.call('EXPIRE', KEYS[i], ARGV[4])
end
redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[4])
return 1
"""


@dataclass(frozen=True, slots=True)
class TreeFilter:
    """What a listing keeps; None matches everything."""

    tenant: str | None = None
    effort: str | None = None
    status: str | None = None
    task: str | None = None


@dataclass(frozen=True, slots=True)
class TreeSummary:
    """One row of a tree listing: the tree's metadata and the task it was asked as."""

    meta: TreeMeta
    task: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self.meta), "task": self.task}


@dataclass(frozen=True, slots=True)
class TreePage:
    trees: list[TreeSummary]
    # Pass as `before` to read the next (older) page; None when there is none.
    next_before: float | None


@dataclass(frozen=True, slots=True)
class _Entry:
    tree_id: str
    owner: str
    effort: str
    task: str


class TreeIndex:
    """Adds trees as the gateway creates them and lists the recent ones, newest first."""

    def __init__(self, redis: Redis, keys: KeySpace, ttl_s: int) -> None:
        if ttl_s <= 0:
            raise ValueError(f"the tree index TTL must be a positive number of seconds, got {ttl_s}")
        self._redis = redis
        self._prefix = f"{keys.prefix}:{INDEX_TAG}"
        self._ttl_s = ttl_s
        self._add = redis.register_script(_ADD_LUA)

    def _all_key(self) -> str:
        return f"{self._prefix}:all"

    def _tenant_key(self, tenant: str) -> str:
        return f"{self._prefix}:tenant:{tenant}"

    def _entry_key(self, tree_id: str) -> str:
        return f"{self._prefix}:entry:{tree_id}"

    async def add(self, meta: TreeMeta, task: str) -> None:
        """Index a tree the caller has just created."""
        entry = json.dumps({"owner": meta.owner, "effort": meta.effort, "task": task})
        keys = [self._all_key(), self._tenant_key(meta.owner), self._entry_key(meta.tree_id)]
        args = [meta.tree_id, repr(meta.created_at), repr(time.time()), str(self._ttl_s), entry]
        await self._add(keys=keys, args=args)

    async def recent(
        self, store: TreeStore, wanted: TreeFilter, limit: int, before: float | None = None
    ) -> TreePage:
        """Up to `limit` trees matching `wanted`, created before `before`, newest first."""
        key = self._tenant_key(wanted.tenant) if wanted.tenant is not None else self._all_key()
        found: list[TreeSummary] = []
        upper = "+inf" if before is None else f"({before!r}"
        scanned = 0
        while len(found) < limit and scanned < MAX_SCANNED:
            batch = await self._ids(key, upper, scanned, SCAN_BATCH)
            if not batch:
                return TreePage(found, None)
            scanned += len(batch)
            for summary, score in await self._matching(store, batch, wanted):
                found.append(summary)
                if len(found) == limit:
                    return TreePage(found, score)
            if len(batch) < SCAN_BATCH:
                return TreePage(found, None)
        # Stopped at MAX_SCANNED: the caller can go on from the oldest id looked at.
        last = await self._ids(key, upper, scanned - 1, 1)
        return TreePage(found, last[0][1] if last else None)

    async def _ids(self, key: str, upper: str, offset: int, count: int) -> list[tuple[str, float]]:
        rows = await self._redis.zrevrangebyscore(
            key, upper, "-inf", start=offset, num=count, withscores=True
        )
        # withscores: (member, score) pairs, whatever redis-py's union return type says.
        return [(as_text(cast(bytes, row[0])), float(row[1])) for row in rows]

    async def _matching(
        self, store: TreeStore, batch: Sequence[tuple[str, float]], wanted: TreeFilter
    ) -> list[tuple[TreeSummary, float]]:
        entries = await self._entries([tree_id for tree_id, _ in batch])
        candidates = [(entry, score) for entry, (_, score) in zip(entries, batch, strict=True)]
        kept = [(e, s) for e, s in candidates if e is not None and _entry_matches(e, wanted)]
        metas = await _metas(store, [entry.tree_id for entry, _ in kept])
        return [
            (TreeSummary(meta, entry.task), score)
            for (entry, score), meta in zip(kept, metas, strict=True)
            # None: the tree expired before its index entry did.
            if meta is not None and (wanted.status is None or meta.status == wanted.status)
        ]

    async def _entries(self, tree_ids: Sequence[str]) -> list[_Entry | None]:
        raws = await self._redis.mget([self._entry_key(tree_id) for tree_id in tree_ids])
        return [_entry(tree_id, raw) for tree_id, raw in zip(tree_ids, raws, strict=True)]


async def _metas(store: TreeStore, tree_ids: Sequence[str]) -> list[TreeMeta | None]:
    # A few reads at a time: a connection pool has room for some, not for a whole batch.
    metas: list[TreeMeta | None] = []
    for start in range(0, len(tree_ids), META_READS_AT_ONCE):
        chunk = tree_ids[start : start + META_READS_AT_ONCE]
        metas += await asyncio.gather(*(store.get_meta(tree_id) for tree_id in chunk))
    return metas


def _entry(tree_id: str, raw: bytes | str | None) -> _Entry | None:
    if raw is None:
        return None
    data = json.loads(as_text(raw))
    return _Entry(tree_id, str(data["owner"]), str(data["effort"]), str(data["task"]))


def _entry_matches(entry: _Entry, wanted: TreeFilter) -> bool:
    return (
        (wanted.tenant is None or entry.owner == wanted.tenant)
        and (wanted.effort is None or entry.effort == wanted.effort)
        and (wanted.task is None or entry.task == wanted.task)
    )
