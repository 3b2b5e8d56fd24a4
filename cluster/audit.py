"""The audit trail of tree reads: who read which tree, when, and whether they were let in.

Every record goes to two places: a JSON line on the `cluster.audit` logger (for the log
pipeline) and the Redis stream `<prefix>:audit` (capped at `maxlen` records), which an
operator reads with `XRANGE <prefix>:audit - +`. Readers are named identities: a tenant,
or `ops:<name>` for an ops key, never a shared "ops".
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Literal

from redis.asyncio import Redis

from cluster.store.keys import as_text

AuditAction = Literal["read_tree", "follow_events"]
# granted: the tree was shown; denied: it exists but belongs to someone else (answered 404).
AuditOutcome = Literal["granted", "denied"]

logger = logging.getLogger("cluster.audit")


@dataclass(frozen=True, slots=True)
class AuditRecord:
    at: float
    caller: str
    action: AuditAction
    tree_id: str
    owner: str
    outcome: AuditOutcome


class AuditLog:
    def __init__(self, redis: Redis, prefix: str = "rc", maxlen: int = 100_000) -> None:
        self._redis = redis
        self.key = f"{prefix}:audit"
        self._maxlen = maxlen

    async def record(
        self, caller: str, action: AuditAction, tree_id: str, owner: str, outcome: AuditOutcome
    ) -> AuditRecord:
        entry = AuditRecord(time.time(), caller, action, tree_id, owner, outcome)
        fields = {name: str(value) for name, value in asdict(entry).items()}
        logger.info(json.dumps(fields, sort_keys=True))
        await self._redis.xadd(self.key, fields, maxlen=self._maxlen, approximate=True)  # type: ignore[arg-type]
        return entry

    async def read(self, count: int = 1000) -> list[AuditRecord]:
        """The latest records, oldest first."""
        entries = await self._redis.xrevrange(self.key, count=count) or []
        records = []
        for _entry_id, raw in reversed(entries):
            if raw is None:
                continue
            fields = {as_text(k): as_text(v) for k, v in raw.items()}
            records.append(
                AuditRecord(
                    at=float(fields["at"]),
                    caller=fields["caller"],
                    action=fields["action"],  # type: ignore[arg-type]
                    tree_id=fields["tree_id"],
                    owner=fields["owner"],
                    outcome=fields["outcome"],  # type: ignore[arg-type]
                )
            )
        return records
