"""The thought tree in Redis: nodes, children, search frontier, metadata and events.

Layout (see `keys.py`): a hash per node (`nodes.py` says which fields), a lexicographic
sorted set of `parent:child` edges for child lookups, a score-ordered sorted set of the open
frontier, a meta hash, a node-id counter and an event stream. Only the planner that holds a
tree's lease writes its nodes; it sends each batch of changes (`TreeWrite`: the children of
one expansion, their scores, statuses, MCTS visits, events) as one script, so one round trip
per expansion persists it atomically, on a single server and, all keys sharing a hash tag,
on Redis Cluster too. A lease token passed with a write fences off a planner that lost the
tree to another.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclass_fields
from typing import Any, Literal, cast, get_args

from redis.asyncio import Redis

from cluster.store.budget import BudgetSnapshot, grant_fields
from cluster.store.keys import KeySpace, TreeKeys, TreeNotFoundError, as_text
from cluster.store.lease import LeaseLostError
from cluster.store.nodes import (
    NODE_STATUSES,
    NodeDraft,
    NodeStatus,
    ThoughtNode,
    check_status,
    draft_fields,
    finite,
    node_from_fields,
    node_order,
    score_fields,
)
from cluster.store.scripts import APPEND_EVENT, CREATE_TREE, FINISH_TREE, SET_META, WRITE_TREE

FinalTreeStatus = Literal["done", "failed", "cancelled"]
TreeStatus = Literal["running", FinalTreeStatus]

TREE_STATUSES: frozenset[str] = frozenset(get_args(TreeStatus))
FINAL_TREE_STATUSES: frozenset[str] = frozenset(get_args(FinalTreeStatus))

EVENTS_MAXLEN = 10_000
QUESTION_PREVIEW_CHARS = 280

_EXTRA_PREFIX = "x:"
_WINNING_PATH = "winning_path"
_FLOAT_META = ("created_at", "updated_at")


class TreeExistsError(ValueError):
    """create_tree was called for a tree id that is already in use."""


class NodeNotFoundError(KeyError):
    """A node id named in a call is not in the tree."""

    def __init__(self, tree_id: str, node_id: str) -> None:
        super().__init__(node_id)
        self.tree_id = tree_id
        self.node_id = node_id

    def __str__(self) -> str:
        return f"node {self.node_id!r} is not in thought tree {self.tree_id!r}"


@dataclass(frozen=True, slots=True)
class TreeMeta:
    tree_id: str
    owner: str
    effort: str
    strategy: str
    status: TreeStatus = "running"
    created_at: float = 0.0
    updated_at: float = 0.0
    model: str = ""
    question: str = ""
    # Free-form notes of the search strategy (e.g. the difficulty estimate it acted on).
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ThoughtTree:
    meta: TreeMeta
    nodes: list[ThoughtNode]
    winning_path: list[str]
    budget: BudgetSnapshot

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: only dicts, lists, str, int, float, None."""
        return {
            "meta": asdict(self.meta),
            "nodes": [asdict(node) for node in self.nodes],
            "winning_path": list(self.winning_path),
            "budget": self.budget.to_dict(),
        }


@dataclass(slots=True)
class TreeWrite:
    """One atomic batch of changes to a tree: new children of one parent (roots when
    `parent_id` is None), field updates of existing nodes, MCTS visits, and events."""

    parent_id: str | None = None
    drafts: list[NodeDraft] = field(default_factory=list)
    # node id -> fields to set; later updates of a field win.
    updates: dict[str, dict[str, str]] = field(default_factory=dict)
    visits: list[tuple[list[str], str]] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)

    def set_status(self, node_id: str, status: NodeStatus) -> None:
        self.updates.setdefault(node_id, {})["status"] = check_status(status, NODE_STATUSES, "node")

    def set_scores(
        self,
        node_id: str,
        score: float | None = None,
        scores: Mapping[str, float] | None = None,
        reasons: Mapping[str, str] | None = None,
    ) -> None:
        """Record a combined score and, per verifier, its score and reason (merged in)."""
        self.updates.setdefault(node_id, {}).update(score_fields(score, scores, reasons))

    def visit(self, node_ids: Sequence[str], value: float) -> None:
        """Count one evaluation of `value` on every node of a path."""
        if node_ids:
            self.visits.append((list(node_ids), finite("value", value)))

    def event(self, kind: str, data: Mapping[str, Any]) -> None:
        self.events.append((kind, json.dumps(dict(data)), repr(time.time())))

    def take(self) -> TreeWrite:
        """Everything recorded so far, leaving this batch empty (the parent stays)."""
        taken = TreeWrite(self.parent_id, self.drafts, self.updates, self.visits, self.events)
        self.drafts, self.updates, self.visits, self.events = [], {}, [], []
        return taken

    def is_empty(self) -> bool:
        return not (self.drafts or self.updates or self.visits or self.events)


async def _await(value: Awaitable[Any] | Any) -> Any:
    # redis-py types commands as "awaitable or value" for its sync/async shared mixins;
    # on the asyncio client it is always awaitable.
    return await value


class TreeStore:
    """Reads and writes thought trees; safe to share between tasks of one event loop."""

    def __init__(self, redis: Redis, keys: KeySpace | None = None) -> None:
        self._redis = redis
        self._keys = keys or KeySpace()
        self._create = redis.register_script(CREATE_TREE)
        self._write = redis.register_script(WRITE_TREE)
        self._set_meta = redis.register_script(SET_META)
        self._finish = redis.register_script(FINISH_TREE)
        self._append_event = redis.register_script(APPEND_EVENT)

    def keys(self, tree_id: str) -> TreeKeys:
        return self._keys.tree(tree_id)

    def _raise_for(self, tree_id: str, reply: list[str]) -> None:
        if reply[0] == "notree":
            raise TreeNotFoundError(tree_id)
        if reply[0] == "nonode":
            raise NodeNotFoundError(tree_id, reply[1])
        if reply[0] == "fenced":
            raise LeaseLostError(f"lost the lease of tree {tree_id!r}: another planner writes it now")

    # -- tree lifecycle --

    async def create_tree(
        self, meta: TreeMeta, active_ttl_s: int, grants: Mapping[str, int] | None = None
    ) -> None:
        """Record a new tree and grant its budget in one atomic step; the tree expires after
        `active_ttl_s` unless finished earlier. Refused if any key of the id is still in use
        (an evicted or half-expired tree must not be mixed with a new one)."""
        ttl_ms = _check_ttl("active_ttl_s", active_ttl_s)
        keys = self.keys(meta.tree_id)
        meta_pairs = [item for pair in _meta_to_hash(meta).items() for item in pair]
        args = [str(ttl_ms), keys.node_prefix, json.dumps(meta_pairs), json.dumps(grant_fields(grants or {}))]
        # Meta and budget first (the script writes them), then every other key the id may hold.
        others = [key for key in keys.all() if key not in (keys.meta, keys.budget)]
        script_keys = [keys.meta, keys.budget, *others, keys.lease]
        reply = _reply_items(await self._create(keys=script_keys, args=args))
        if reply[0] == "exists":
            raise TreeExistsError(f"thought tree {meta.tree_id!r} already exists")

    async def set_meta_fields(self, tree_id: str, /, fence: str | None = None, **fields: str | float) -> None:
        """Set TreeMeta fields by name; unknown names become `extra` notes."""
        values = {"updated_at": repr(time.time())}
        for name, value in fields.items():
            values[_meta_field_name(name)] = _meta_field_value(name, value)
        keys = self.keys(tree_id)
        args = [fence or "", *(item for pair in values.items() for item in pair)]
        reply = as_text(await self._set_meta(keys=[keys.meta, keys.lease], args=args))
        self._raise_for(tree_id, [reply])

    async def finish_tree(
        self,
        tree_id: str,
        status: FinalTreeStatus,
        winning_path: Sequence[str],
        result_ttl_s: int,
        fence: str | None = None,
    ) -> None:
        """Mark the winning nodes, record the outcome, and expire the tree after a TTL."""
        check_status(status, FINAL_TREE_STATUSES, "final tree")
        ttl_ms = _check_ttl("result_ttl_s", result_ttl_s)
        keys = self.keys(tree_id)
        fixed = keys.all()
        path = list(winning_path)
        args = [
            status,
            repr(time.time()),
            json.dumps(path),
            str(ttl_ms),
            keys.node_prefix,
            fence or "",
            str(fixed.index(keys.counter) + 1),
            str(fixed.index(keys.frontier) + 1),
            *path,
        ]
        reply = _reply_items(await self._finish(keys=[*fixed, keys.lease], args=args))
        self._raise_for(tree_id, reply)

    # -- nodes --

    async def write(self, tree_id: str, batch: TreeWrite, fence: str | None = None) -> list[ThoughtNode]:
        """Apply a batch atomically, in one round trip; returns its new nodes, ids assigned."""
        keys = self.keys(tree_id)
        now = time.time()
        body = {
            "parent": batch.parent_id or "",
            "new": [draft_fields(draft, now) for draft in batch.drafts],
            "set": [[node_id, fields] for node_id, fields in batch.updates.items()],
            "visit": batch.visits,
            "events": batch.events,
            "maxlen": str(EVENTS_MAXLEN),
        }
        script_keys = [keys.meta, keys.counter, keys.edges, keys.frontier, keys.events, keys.lease]
        args = [keys.node_prefix, fence or "", json.dumps(body, separators=(",", ":"))]
        reply = _reply_items(await self._write(keys=script_keys, args=args))
        self._raise_for(tree_id, reply)
        depth, ids = int(reply[1]), reply[2:]
        return [
            ThoughtNode(
                node_id=node_id,
                parent_id=batch.parent_id,
                depth=depth,
                text=draft.text,
                prompt_tokens=draft.prompt_tokens,
                completion_tokens=draft.completion_tokens,
                cached_tokens=draft.cached_tokens,
                status=draft.status,
                answer=draft.answer,
                replica=draft.replica,
                created_at=now,
                logprob=draft.logprob,
                finish_reason=draft.finish_reason,
            )
            for node_id, draft in zip(ids, batch.drafts, strict=True)
        ]

    async def add_nodes(
        self, tree_id: str, parent_id: str | None, drafts: Sequence[NodeDraft]
    ) -> list[ThoughtNode]:
        """Add children of `parent_id` (roots when None) in one atomic step."""
        if not drafts:
            return []
        return await self.write(tree_id, TreeWrite(parent_id, list(drafts)))

    async def update_node(
        self,
        tree_id: str,
        node_id: str,
        *,
        score: float | None = None,
        scores: Mapping[str, float] | None = None,
        status: NodeStatus | None = None,
    ) -> ThoughtNode:
        """One node's score/status, per-verifier scores merged in; keeps the frontier in step.

        For single edits (operators, tests); a search batches its changes with `write`.
        """
        batch = TreeWrite()
        batch.set_scores(node_id, score, scores)
        if status is not None:
            batch.set_status(node_id, status)
        await self.write(tree_id, batch)
        node = await self.get_node(tree_id, node_id)
        if node is None:
            raise NodeNotFoundError(tree_id, node_id)
        return node

    async def get_node(self, tree_id: str, node_id: str) -> ThoughtNode | None:
        raw = await _await(self._redis.hgetall(self.keys(tree_id).node(node_id)))
        return node_from_fields(node_id, raw) if raw else None

    async def _nodes_by_id(self, tree_id: str, node_ids: Sequence[str]) -> list[ThoughtNode]:
        if not node_ids:
            return []
        keys = self.keys(tree_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            for node_id in node_ids:
                pipe.hgetall(keys.node(node_id))
            raws = await pipe.execute()
        return [node_from_fields(i, raw) for i, raw in zip(node_ids, raws, strict=True) if raw]

    async def children(self, tree_id: str, node_id: str) -> list[ThoughtNode]:
        """Children in creation order, found through the edge index, not a full scan."""
        # ';' is the byte after ':', so this range is exactly the members "<node_id>:*".
        members = await _await(
            self._redis.zrangebylex(self.keys(tree_id).edges, f"[{node_id}:", f"({node_id};")
        )
        child_ids = sorted((as_text(m).split(":", 1)[1] for m in members), key=node_order)
        return await self._nodes_by_id(tree_id, child_ids)

    async def frontier(self, tree_id: str, limit: int) -> list[ThoughtNode]:
        """The best-scored open/expanded nodes, best first."""
        if limit <= 0:
            return []
        ids = await _await(self._redis.zrevrange(self.keys(tree_id).frontier, 0, limit - 1))
        return await self._nodes_by_id(tree_id, [as_text(i) for i in ids])

    # -- reads of the whole tree --

    async def get_meta(self, tree_id: str) -> TreeMeta | None:
        raw = await _await(self._redis.hgetall(self.keys(tree_id).meta))
        return _meta_from_hash(raw) if raw else None

    async def get_tree(self, tree_id: str) -> ThoughtTree | None:
        """Meta, all nodes, winning path and budget; two round trips whatever the size."""
        keys = self.keys(tree_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(keys.meta)
            pipe.hgetall(keys.budget)
            pipe.get(keys.counter)
            meta_raw, budget_raw, counter = await pipe.execute()
        if not meta_raw:
            return None
        ids = [f"n{i}" for i in range(int(as_text(counter)) if counter is not None else 0)]
        nodes = await self._nodes_by_id(tree_id, ids)
        meta_text = {as_text(k): as_text(v) for k, v in meta_raw.items()}
        return ThoughtTree(
            meta=_meta_from_hash(meta_raw),
            nodes=nodes,
            winning_path=json.loads(meta_text.get(_WINNING_PATH, "[]")),
            budget=BudgetSnapshot.from_hash(budget_raw),
        )

    # -- events --

    async def append_event(self, tree_id: str, kind: str, data: Mapping[str, Any]) -> str:
        """Append a progress event; returns its stream id. The stream keeps ~10k events."""
        keys = self.keys(tree_id)
        args = [str(EVENTS_MAXLEN), kind, json.dumps(dict(data)), repr(time.time())]
        event_id = await self._append_event(keys=[keys.meta, keys.events], args=args)
        if event_id is None:
            raise TreeNotFoundError(tree_id)
        return as_text(event_id)

    async def read_events(
        self,
        tree_id: str,
        after_id: str = "0",
        block_ms: int | None = None,
        count: int = 100,
    ) -> list[tuple[str, dict[str, Any]]]:
        """Events after `after_id` as (id, {"kind", "data", "ts"}); waits up to block_ms."""
        key = self.keys(tree_id).events
        reply = await _await(self._redis.xread({key: after_id}, count=count, block=block_ms))
        return [(as_text(entry_id), _event_fields(raw)) for entry_id, raw in _xread_entries(reply)]


# --- encoding helpers ------------------------------------------------------------------


def _check_ttl(name: str, ttl_s: int) -> int:
    # A tree without TTL would outlive everyone who could finish it; insist on one.
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or ttl_s <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {ttl_s!r}")
    return ttl_s * 1000


def _meta_to_hash(meta: TreeMeta) -> dict[str, str]:
    data: dict[str, str] = {
        "tree_id": meta.tree_id,
        "owner": meta.owner,
        "effort": _plain(meta.effort),
        "strategy": meta.strategy,
        "status": check_status(meta.status, TREE_STATUSES, "tree"),
        "created_at": repr(float(meta.created_at)),
        "updated_at": repr(float(meta.updated_at)),
        "model": meta.model,
        "question": meta.question[:QUESTION_PREVIEW_CHARS],
    }
    data.update({_EXTRA_PREFIX + k: v for k, v in meta.extra.items()})
    return data


def _plain(value: object) -> str:
    # A str-valued Enum (e.g. cluster.types.Effort) should be stored as its value,
    # not as "Effort.HIGH".
    inner = getattr(value, "value", value)
    return str(inner)


def _meta_from_hash(raw: Mapping[Any, Any]) -> TreeMeta:
    data = {as_text(k): as_text(v) for k, v in raw.items()}
    extra = {k[len(_EXTRA_PREFIX) :]: v for k, v in data.items() if k.startswith(_EXTRA_PREFIX)}
    return TreeMeta(
        tree_id=data["tree_id"],
        owner=data.get("owner", ""),
        effort=data.get("effort", ""),
        strategy=data.get("strategy", ""),
        status=cast(TreeStatus, data.get("status", "running")),
        created_at=float(data.get("created_at", "0")),
        updated_at=float(data.get("updated_at", "0")),
        model=data.get("model", ""),
        question=data.get("question", ""),
        extra=extra,
    )


def _meta_field_name(name: str) -> str:
    if name == "tree_id" or name == _WINNING_PATH or name == "extra":
        raise ValueError(f"meta field {name!r} cannot be set with set_meta_fields")
    if name in {f.name for f in dataclass_fields(TreeMeta)}:
        return name
    return _EXTRA_PREFIX + name


def _meta_field_value(name: str, value: str | float) -> str:
    if name in _FLOAT_META:
        return finite(name, float(value))
    if name == "status":
        return check_status(str(value), TREE_STATUSES, "tree")
    if name == "question":
        return str(value)[:QUESTION_PREVIEW_CHARS]
    return _plain(value)


def _reply_items(reply: Any) -> list[str]:
    return [as_text(item) for item in reply]


def _xread_entries(reply: Any) -> list[tuple[Any, Any]]:
    # RESP2 answers [[stream, entries]]; redis-py's RESP3 parser {stream: [entries]}.
    if not reply:
        return []
    if isinstance(reply, dict):
        batches = [entries for nested in reply.values() for entries in nested]
    else:
        batches = [stream[1] for stream in reply]
    return [(entry[0], entry[1]) for batch in batches for entry in batch]


def _event_fields(raw: Any) -> dict[str, Any]:
    if isinstance(raw, list | tuple):
        raw = dict(zip(raw[::2], raw[1::2], strict=True))
    data = {as_text(k): as_text(v) for k, v in raw.items()}
    return {
        "kind": data.get("kind", ""),
        "data": json.loads(data.get("data", "{}")),
        "ts": float(data.get("ts", "0")),
    }
