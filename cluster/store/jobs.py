"""Response jobs in Redis: status, the Response object as JSON and its numbered stream events.

A job is one `POST /v1/responses` (or gRPC call). Whatever replica runs it writes here, and
any gateway replica reads from here, so a client that disconnects, or a gateway replica that
restarts, loses nothing: polling sees the stored object and a resumed stream reads the events
after the last sequence number it saw.

Keys share the hash tag `{job_id}`: `<prefix>:resp:{id}` (hash) and `<prefix>:resp:{id}:events`
(a stream whose entry ids are `<sequence_number + 1>-0`, so "after sequence n" is one XREAD).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis

from cluster.store.keys import DEFAULT_PREFIX, as_text

# The tree store's parser of XREAD replies (RESP2 and RESP3 shapes): one parser for both stores.
from cluster.store.tree import _xread_entries

# KEYS: job hash. ARGV: ttl ms, then field/value pairs. 1 if created, 0 if the id is taken.
_CREATE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

# KEYS: job hash. ARGV: field/value pairs. Updates a job that exists; 0 when it is gone.
_UPDATE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""

# KEYS: job hash, events. ARGV: entry id, event JSON. The events key lives as long as the job.
_APPEND_LUA = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then return 0 end
redis.call('XADD', KEYS[2], ARGV[1], 'event', ARGV[2])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1
"""


# KEYS: job hash, events. ARGV: the sequence number the events must follow, status, response
# JSON, then entry id / event JSON pairs. Ends a job that has not ended and whose stream still
# stops at that sequence number: events and final status together, or nothing.
_END_LUA = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
if status == 'completed' or status == 'incomplete' or status == 'failed' or status == 'cancelled' then
  return 0
end
local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local last = -1
if #top > 0 then last = tonumber(string.match(top[1][1], '^(%d+)')) - 1 end
if last ~= tonumber(ARGV[1]) then return 0 end
for i = 4, #ARGV, 2 do redis.call('XADD', KEYS[2], ARGV[i], 'event', ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'response', ARGV[3])
return 1
"""


class JobNotFoundError(KeyError):
    """The job was deleted or expired while it was written to."""


@dataclass(frozen=True, slots=True)
class JobRecord:
    job_id: str
    owner: str
    status: str
    background: bool
    created_at: float
    # Identifies the request's content, so that a retry with the same id can be told apart
    # from a different request that reuses it.
    digest: str
    # The Response object as it stands (the API's JSON).
    response: dict[str, Any]
    # What the response echoes of its request (cluster.responses.ResponseShape.to_dict()).
    shape: dict[str, Any]
    cancel_requested: bool = False
    # The job runner replica running it (set when the runner takes the job).
    runner: str | None = None

    @property
    def final(self) -> bool:
        return self.status in {"completed", "incomplete", "failed", "cancelled"}


def _await(value: Awaitable[Any] | Any) -> Awaitable[Any]:
    # redis-py types many commands as `Awaitable[T] | T`; on the asyncio client they are awaitables.
    return cast(Awaitable[Any], value)


class JobStore:
    def __init__(self, redis: Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._redis = redis
        self._prefix = prefix
        self._create = redis.register_script(_CREATE_LUA)
        self._update = redis.register_script(_UPDATE_LUA)
        self._append = redis.register_script(_APPEND_LUA)
        self._end = redis.register_script(_END_LUA)

    def _key(self, job_id: str) -> str:
        if not job_id or "{" in job_id or "}" in job_id:
            raise ValueError(f"job id {job_id!r} must be non-empty and free of braces")
        return f"{self._prefix}:resp:{{{job_id}}}"

    def _events_key(self, job_id: str) -> str:
        return self._key(job_id) + ":events"

    async def create(
        self,
        job_id: str,
        owner: str,
        *,
        background: bool,
        digest: str,
        response: Mapping[str, Any],
        shape: Mapping[str, Any],
        ttl_s: int,
    ) -> bool:
        """Store a new job as `queued`; False (and nothing written) when the id is taken."""
        fields = {
            "owner": owner,
            "status": str(response.get("status", "queued")),
            "background": "1" if background else "0",
            "created_at": repr(time.time()),
            "digest": digest,
            "response": json.dumps(response),
            "shape": json.dumps(shape),
        }
        args: list[str] = [str(ttl_s * 1000)]
        for name, value in fields.items():
            args += [name, value]
        return bool(await self._create(keys=[self._key(job_id)], args=args))

    async def get(self, job_id: str) -> JobRecord | None:
        raw = await _await(self._redis.hgetall(self._key(job_id)))
        if not raw:
            return None
        data = {as_text(k): as_text(v) for k, v in raw.items()}
        return JobRecord(
            job_id=job_id,
            owner=data.get("owner", ""),
            status=data.get("status", "queued"),
            background=data.get("background") == "1",
            created_at=float(data.get("created_at", "0")),
            digest=data.get("digest", ""),
            response=json.loads(data.get("response", "{}")),
            shape=json.loads(data.get("shape", "{}")),
            cancel_requested=data.get("cancel_requested") == "1",
            runner=data.get("runner"),
        )

    async def save_response(self, job_id: str, response: Mapping[str, Any]) -> None:
        """Store the Response object as it now stands, and its status."""
        args = ["status", str(response["status"]), "response", json.dumps(response)]
        if not await self._update(keys=[self._key(job_id)], args=args):
            raise JobNotFoundError(job_id)

    async def claim(self, job_id: str, runner: str) -> None:
        """Record which job runner replica runs the job."""
        if not await self._update(keys=[self._key(job_id)], args=["runner", runner]):
            raise JobNotFoundError(job_id)

    async def beat(self, runner: str, ttl_s: int) -> None:
        """A runner replica says it is alive for the next `ttl_s`."""
        await self._redis.set(self._runner_key(runner), "1", ex=ttl_s)

    async def runner_alive(self, runner: str) -> bool:
        return bool(await self._redis.exists(self._runner_key(runner)))

    def _runner_key(self, runner: str) -> str:
        return f"{self._prefix}:resp-runner:{runner}"

    async def last_sequence(self, job_id: str) -> int:
        """The sequence number of the job's last event; -1 before the first."""
        reply = await _await(self._redis.xrevrange(self._events_key(job_id), count=1))
        if not reply:
            return -1
        return int(as_text(reply[0][0]).partition("-")[0]) - 1

    async def end(
        self,
        job_id: str,
        after_sequence: int,
        events: Sequence[Mapping[str, Any]],
        response: Mapping[str, Any],
    ) -> bool:
        """Append a job's last events and store its final response, at once, if it has not ended
        and its stream still stops at `after_sequence` (else nothing is written: False)."""
        args = [str(after_sequence), str(response["status"]), json.dumps(response)]
        for event in events:
            args += [f"{int(event['sequence_number']) + 1}-0", json.dumps(event)]
        return bool(await self._end(keys=[self._key(job_id), self._events_key(job_id)], args=args))

    async def request_cancel(self, job_id: str) -> bool:
        """Ask whoever runs the job to stop it; False when there is no such job."""
        return bool(await self._update(keys=[self._key(job_id)], args=["cancel_requested", "1"]))

    async def cancel_requested(self, job_id: str) -> bool:
        """True once a client asked to stop the job, or deleted it: a job gone is not to be run."""
        owner, flag = await _await(self._redis.hmget(self._key(job_id), ["owner", "cancel_requested"]))
        return owner is None or as_text(flag or "") == "1"

    async def append_event(self, job_id: str, event: Mapping[str, Any]) -> None:
        """Append a stream event; its `sequence_number` orders it (and names its entry)."""
        entry_id = f"{int(event['sequence_number']) + 1}-0"
        keys = [self._key(job_id), self._events_key(job_id)]
        if not await self._append(keys=keys, args=[entry_id, json.dumps(event)]):
            raise JobNotFoundError(job_id)

    async def read_events(
        self, job_id: str, after_sequence: int = -1, block_ms: int | None = None, count: int = 200
    ) -> list[dict[str, Any]]:
        """Events with a sequence number above `after_sequence`; waits up to `block_ms` for some."""
        after = f"{after_sequence + 1}-0" if after_sequence >= 0 else "0-0"
        reply = await _await(
            self._redis.xread({self._events_key(job_id): after}, count=count, block=block_ms)
        )
        events = []
        for _entry_id, fields in _xread_entries(reply):
            flat = isinstance(fields, list | tuple)
            pairs = zip(fields[::2], fields[1::2], strict=True) if flat else fields.items()
            text = {as_text(k): as_text(v) for k, v in pairs}
            events.append(json.loads(text["event"]))
        return events

    async def expire(self, job_id: str, ttl_s: int) -> None:
        """Keep a finished job (and its events) for `ttl_s`."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.expire(self._key(job_id), ttl_s)
            pipe.expire(self._events_key(job_id), ttl_s)
            await pipe.execute()

    async def delete(self, job_id: str) -> bool:
        return bool(await self._redis.delete(self._key(job_id), self._events_key(job_id)))
