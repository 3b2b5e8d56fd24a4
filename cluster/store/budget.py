"""Per-tree budget ledger: grant, reserve, settle, release — atomically, in Redis.

Many planner and generator processes spend one tree's budget at once. Each of them first
*reserves* what it might spend (the most a call could use, e.g. its max_tokens), then
*settles* what the engine reported it actually used, returning the rest. Reserving is a
single Lua script that never hands out more than granted - spent - reserved, so the sum of
all spending can never exceed the grant however many processes race.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from cluster.store.keys import LUA_INHERIT_TTL, KeySpace, TreeNotFoundError, as_text

# The resources every tree's budget grants.
TOKENS = "tokens"
VERIFIER_CALLS = "verifier_calls"

_GRANTED = "granted"
_SPENT = "spent"
_RESERVED = "reserved"

_NO_TREE = -1
_OVER_RELEASE = -2

_GRANT_LUA = (
    LUA_INHERIT_TTL
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
for i = 1, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
inherit_ttl(KEYS[2])
return 1
"""
)

_RESERVE_LUA = (
    LUA_INHERIT_TTL
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local r = ARGV[1]
local want = tonumber(ARGV[2])
local granted = tonumber(redis.call('HGET', KEYS[2], 'granted:' .. r)) or 0
local spent = tonumber(redis.call('HGET', KEYS[2], 'spent:' .. r)) or 0
local reserved = tonumber(redis.call('HGET', KEYS[2], 'reserved:' .. r)) or 0
local take = math.min(want, granted - spent - reserved)
if take <= 0 then return 0 end
redis.call('HINCRBY', KEYS[2], 'reserved:' .. r, string.format('%d', take))
inherit_ttl(KEYS[2])
return take
"""
)

# Refuses to give back more than is outstanding, so a double settle or release shows up
# as an error instead of silently freeing budget that another process still holds.
_SETTLE_LUA = (
    LUA_INHERIT_TTL
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local r = ARGV[1]
local amount = tonumber(ARGV[2])
local used = tonumber(ARGV[3])
local held = tonumber(redis.call('HGET', KEYS[2], 'reserved:' .. r)) or 0
if held < amount then return -2 end
redis.call('HINCRBY', KEYS[2], 'reserved:' .. r, string.format('%d', -amount))
if used > 0 then
  redis.call('HINCRBY', KEYS[2], 'spent:' .. r, string.format('%d', used))
end
inherit_ttl(KEYS[2])
return 1
"""
)


# Zeroes every outstanding reservation: only for a new lease holder taking over a tree
# whose previous holder died holding them (its engine calls died with it).
_VOID_RESERVATIONS_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local fields = redis.call('HKEYS', KEYS[2])
local voided = 0
for _, name in ipairs(fields) do
  if string.sub(name, 1, 9) == 'reserved:' then
    voided = voided + (tonumber(redis.call('HGET', KEYS[2], name)) or 0)
    redis.call('HSET', KEYS[2], name, '0')
  end
end
return voided
"""


@dataclass(frozen=True, slots=True)
class BudgetSnapshot:
    """One consistent read of a tree's ledger, per resource (e.g. "tokens", "verifier_calls")."""

    granted: dict[str, int] = field(default_factory=dict)
    spent: dict[str, int] = field(default_factory=dict)
    reserved: dict[str, int] = field(default_factory=dict)

    def remaining(self, resource: str) -> int:
        """What could still be reserved; never negative, even if a grant was lowered."""
        left = self.granted.get(resource, 0) - self.spent.get(resource, 0) - self.reserved.get(resource, 0)
        return max(left, 0)

    def to_dict(self) -> dict[str, dict[str, int]]:
        return {
            "granted": dict(self.granted),
            "spent": dict(self.spent),
            "reserved": dict(self.reserved),
        }

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> BudgetSnapshot:
        """Parse the budget hash (`<kind>:<resource>` -> integer)."""
        columns: dict[str, dict[str, int]] = {_GRANTED: {}, _SPENT: {}, _RESERVED: {}}
        for key, value in raw.items():
            kind, _, resource = as_text(key).partition(":")
            if kind in columns and resource:
                columns[kind][resource] = int(as_text(value))
        return cls(granted=columns[_GRANTED], spent=columns[_SPENT], reserved=columns[_RESERVED])


@dataclass(slots=True)
class Reservation:
    """Budget held for one piece of work; record what it really consumed with `use`."""

    resource: str
    amount: int
    used: int = 0

    @property
    def remaining(self) -> int:
        return self.amount - self.used

    def use(self, n: int) -> None:
        # Consuming more than was reserved is exactly the overspend the ledger exists to
        # prevent, so it is a caller bug, reported where it happens.
        _check_amount("used", n)
        if self.used + n > self.amount:
            raise ValueError(
                f"using {n} {self.resource} would exceed the reservation "
                f"({self.used} of {self.amount} already used)"
            )
        self.used += n


def grant_fields(limits: Mapping[str, int]) -> list[str]:
    """Budget-hash field/value pairs that grant `limits` (the tree store grants at creation)."""
    fields: list[str] = []
    for resource, amount in limits.items():
        _check_resource(resource)
        _check_amount(f"grant of {resource}", amount)
        fields += [f"{_GRANTED}:{resource}", str(amount)]
    return fields


def _check_resource(resource: str) -> None:
    if not resource or ":" in resource:
        raise ValueError(f"resource name {resource!r} must be non-empty and contain no ':'")


def _check_amount(name: str, value: int) -> None:
    # bool is an int subclass; True as an amount is always a mistake.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")


class BudgetLedger:
    """Grants and spending of each tree, kept in the tree's budget hash."""

    def __init__(self, redis: Redis, keys: KeySpace | None = None) -> None:
        self._redis = redis
        self._keys = keys or KeySpace()
        self._grant = redis.register_script(_GRANT_LUA)
        self._reserve = redis.register_script(_RESERVE_LUA)
        self._settle = redis.register_script(_SETTLE_LUA)
        self._void = redis.register_script(_VOID_RESERVATIONS_LUA)

    def _ledger_keys(self, tree_id: str) -> list[str]:
        keys = self._keys.tree(tree_id)
        return [keys.meta, keys.budget]

    async def grant(self, tree_id: str, limits: Mapping[str, int]) -> None:
        """Set the granted amount of each resource (replacing earlier grants of it)."""
        args = grant_fields(limits)
        if not args:
            return
        result = await self._grant(keys=self._ledger_keys(tree_id), args=args)
        if int(result) == _NO_TREE:
            raise TreeNotFoundError(tree_id)

    async def reserve(self, tree_id: str, resource: str, amount: int) -> int:
        """Hold up to `amount`; returns what was held (0 when the budget is exhausted)."""
        _check_resource(resource)
        _check_amount("amount", amount)
        if amount == 0:
            return 0
        result = int(await self._reserve(keys=self._ledger_keys(tree_id), args=[resource, str(amount)]))
        if result == _NO_TREE:
            raise TreeNotFoundError(tree_id)
        return result

    async def settle(self, tree_id: str, resource: str, reserved: int, used: int) -> None:
        """Count `used` of a reservation as spent and return the rest of it."""
        _check_resource(resource)
        _check_amount("reserved", reserved)
        _check_amount("used", used)
        if used > reserved:
            raise ValueError(f"used ({used}) exceeds the reservation ({reserved}) of {resource}")
        await self._apply_settle(tree_id, resource, reserved, used)

    async def release(self, tree_id: str, resource: str, reserved: int) -> None:
        """Return an unused reservation. A vanished tree has nothing to return it to."""
        _check_resource(resource)
        _check_amount("reserved", reserved)
        try:
            await self._apply_settle(tree_id, resource, reserved, 0)
        except TreeNotFoundError:
            return

    async def _apply_settle(self, tree_id: str, resource: str, reserved: int, used: int) -> None:
        if reserved == 0:
            return
        args = [resource, str(reserved), str(used)]
        result = int(await self._settle(keys=self._ledger_keys(tree_id), args=args))
        if result == _NO_TREE:
            raise TreeNotFoundError(tree_id)
        if result == _OVER_RELEASE:
            raise ValueError(
                f"tree {tree_id!r} holds less than {reserved} reserved {resource}: "
                "the reservation was already settled or released"
            )

    async def void_reservations(self, tree_id: str) -> int:
        """Return every outstanding reservation of a tree whose planner died; the total voided."""
        result = int(await self._void(keys=self._ledger_keys(tree_id), args=[]))
        if result == _NO_TREE:
            raise TreeNotFoundError(tree_id)
        return result

    async def snapshot(self, tree_id: str) -> BudgetSnapshot:
        raw = await _await(self._redis.hgetall(self._keys.tree(tree_id).budget))
        return BudgetSnapshot.from_hash(raw)

    @asynccontextmanager
    async def reservation(self, tree_id: str, resource: str, amount: int) -> AsyncIterator[Reservation]:
        """Reserve for the block; settle what it `use`d and release the rest on any exit.

        On an exception the part recorded with `use` is still settled as spent (the engine
        did consume it; dropping it would let later work overspend) and the rest released.
        """
        held = await self.reserve(tree_id, resource, amount)
        booking = Reservation(resource=resource, amount=held)
        try:
            yield booking
        finally:
            # Shielded: a second cancellation while we clean up must not leak the budget.
            await asyncio.shield(self._close(tree_id, booking))

    async def _close(self, tree_id: str, booking: Reservation) -> None:
        if booking.used:
            await self.settle(tree_id, booking.resource, booking.amount, booking.used)
        else:
            await self.release(tree_id, booking.resource, booking.amount)


async def _await(value: Awaitable[Any] | Any) -> Any:
    # redis-py types commands as "awaitable or value" for its sync/async shared mixins;
    # on the asyncio client it is always awaitable.
    return await value
