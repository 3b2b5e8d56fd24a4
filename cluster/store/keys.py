"""Redis key names for one thought tree.

Every key of a tree carries the hash tag `{tree_id}`: Redis Cluster then places all of
them in one slot, which is what lets the Lua scripts and transactions of the store touch
several keys of a tree at once. Besides a small fixed set of keys, every node is
a hash of its own; node ids come from the tree's counter, so the finishing script can find
every key of the tree and give all of them the result TTL.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "rc"


def _check_part(name: str, value: str) -> None:
    # A brace would move or break the hash tag and spread one tree over several slots.
    if not value:
        raise ValueError(f"{name} must be a non-empty string")
    if "{" in value or "}" in value:
        raise ValueError(f"{name} {value!r} may not contain '{{' or '}}'")


@dataclass(frozen=True, slots=True)
class TreeKeys:
    """The fixed set of keys that holds one tree."""

    prefix: str
    tree_id: str

    def _key(self, suffix: str) -> str:
        return f"{self.prefix}:{{{self.tree_id}}}:{suffix}"

    @property
    def meta(self) -> str:
        """Hash: TreeMeta fields, extras as `x:<name>`, and the winning path."""
        return self._key("meta")

    @property
    def node_prefix(self) -> str:
        """Every node is a hash of its own under this prefix plus its id (see `node`)."""
        return self._key("node:")

    def node(self, node_id: str) -> str:
        """Hash: one node's fields (`cluster.store.nodes` encodes and decodes them)."""
        return self.node_prefix + node_id

    @property
    def edges(self) -> str:
        """Sorted set, all scores 0: members `parent_id:child_id`, read with ZRANGEBYLEX."""
        return self._key("edges")

    @property
    def frontier(self) -> str:
        """Sorted set: open/expanded node ids that have a score, scored by it."""
        return self._key("frontier")

    @property
    def budget(self) -> str:
        """Hash: `granted:<resource>`, `spent:<resource>`, `reserved:<resource>`."""
        return self._key("budget")

    @property
    def events(self) -> str:
        """Stream of progress events."""
        return self._key("events")

    @property
    def lease(self) -> str:
        """The planner lease: who runs the search of this tree right now."""
        return self._key("lease")

    @property
    def counter(self) -> str:
        """String counter that allocates node ids."""
        return self._key("counter")

    @property
    def response(self) -> str:
        """String: the gateway's answer to the request that made the tree (cluster.store.responses).

        Not among `all()`: it is written once the tree has finished, expiring with the meta key.
        """
        return self._key("response")

    def all(self) -> tuple[str, ...]:
        """The tree's fixed keys; meta first (scripts rely on KEYS[1] being meta).

        Node hashes (`node(id)`) come on top: ids are `n0` .. `n<counter - 1>`.
        """
        return (
            self.meta,
            self.edges,
            self.frontier,
            self.budget,
            self.events,
            self.counter,
        )


@dataclass(frozen=True, slots=True)
class KeySpace:
    """Names keys under one prefix, so several deployments can share a Redis."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        _check_part("prefix", self.prefix)

    def tree(self, tree_id: str) -> TreeKeys:
        _check_part("tree_id", tree_id)
        return TreeKeys(self.prefix, tree_id)


# Lua prelude shared by every write script. A key created after the tree's TTL was set
# (the first event, the first node) would otherwise live forever; copying the meta key's
# remaining TTL keeps the whole tree expiring together. Scripts pass meta as KEYS[1].
LUA_INHERIT_TTL = """
local function inherit_ttl(key)
  if redis.call('PTTL', key) == -1 then
    local ttl = redis.call('PTTL', KEYS[1])
    if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
  end
end
"""


def as_text(value: bytes | str) -> str:
    """Replies are bytes or str depending on the client's `decode_responses`; accept both."""
    return value.decode() if isinstance(value, bytes) else value


class TreeNotFoundError(KeyError):
    """The tree's meta key is absent: never created, or expired after its TTL."""

    def __init__(self, tree_id: str) -> None:
        super().__init__(tree_id)
        self.tree_id = tree_id

    def __str__(self) -> str:
        return f"thought tree {self.tree_id!r} does not exist (never created, or expired)"
