"""The answer a tree's request got, kept so that a retry with the same X-Request-Id gets it too.

The gateway saves the outcome (a completion, or the error it answered with) once the search
has ended; it expires together with the tree's meta key, so an answer never outlives its tree.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis

from cluster.store.keys import KeySpace

# KEYS: meta, response. ARGV: the JSON. Returns 0 when the tree is gone (nothing saved).
_SAVE_LUA = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ttl)
return 1
"""


class ResponseStore:
    def __init__(self, redis: Redis, keys: KeySpace | None = None) -> None:
        self._redis = redis
        self._keys = keys or KeySpace()
        self._save = redis.register_script(_SAVE_LUA)

    async def save(self, tree_id: str, outcome: Mapping[str, Any]) -> bool:
        """Keep `outcome` for as long as the tree lives; False if the tree has expired."""
        keys = self._keys.tree(tree_id)
        return bool(int(await self._save(keys=[keys.meta, keys.response], args=[json.dumps(dict(outcome))])))

    async def load(self, tree_id: str) -> dict[str, Any] | None:
        raw = await self._redis.get(self._keys.tree(tree_id).response)
        return None if raw is None else dict(json.loads(raw))
