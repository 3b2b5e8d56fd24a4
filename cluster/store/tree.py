"""The thought tree in Redis: nodes, children, search frontier, metadata and events.

Layout (see `keys.py`): one hash of node JSON, a lexicographic sorted set of
`parent:child` edges for child lookups, a score-ordered sorted set of the open frontier,
a meta hash, a node-id counter and an event stream. Every write that can race (many
generator replicas adding children, verifiers merging scores) is one Lua script, so it is
atomic on a single server and, all keys sharing a hash tag, on Redis Cluster too.

Floats inside node JSON are never re-encoded with Redis' cjson, which keeps only 14
significant digits: new nodes are spliced from JSON that Python produced, and updates go
through a small encoder that prints numbers with round-trip precision.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclass_fields
from typing import Any, Literal, cast, get_args

from redis.asyncio import Redis

from cluster.store.budget import BudgetSnapshot
from cluster.store.keys import LUA_INHERIT_TTL, KeySpace, TreeKeys, TreeNotFoundError, as_text

FinalTreeStatus = Literal["done", "failed", "cancelled"]
TreeStatus = Literal["running", FinalTreeStatus]
NodeStatus = Literal["open", "expanded", "answer", "pruned", "won"]

TREE_STATUSES: frozenset[str] = frozenset(get_args(TreeStatus))
FINAL_TREE_STATUSES: frozenset[str] = frozenset(get_args(FinalTreeStatus))
NODE_STATUSES: frozenset[str] = frozenset(get_args(NodeStatus))
# Nodes the search may still pick up; only these (and only once scored) sit in the frontier.
FRONTIER_STATUSES: frozenset[str] = frozenset({"open", "expanded"})

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
class NodeDraft:
    """A node as a generator proposes it; the store assigns id, parent and depth."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    replica: str | None = None
    answer: str | None = None
    status: NodeStatus = "open"
    # Mean log-probability of the step's tokens under the model (its own confidence).
    logprob: float | None = None


@dataclass(frozen=True, slots=True)
class ThoughtNode:
    node_id: str
    parent_id: str | None
    depth: int
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    score: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    status: NodeStatus = "open"
    answer: str | None = None
    replica: str | None = None
    created_at: float = 0.0
    logprob: float | None = None
    # Tree search statistics (MCTS): evaluations backed up through this node and their sum.
    visits: int = 0
    value_sum: float = 0.0

    @property
    def mean_value(self) -> float | None:
        return self.value_sum / self.visits if self.visits else None

    @classmethod
    def from_json(cls, raw: bytes | str) -> ThoughtNode:
        data = json.loads(raw)
        known = {f.name for f in dataclass_fields(cls)}
        # Ignore fields a newer writer may have added, so old readers keep working.
        return cls(**{k: v for k, v in data.items() if k in known})


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


# --- Lua -------------------------------------------------------------------------------

# Round-trip JSON encoding for decoded node objects. Node JSON holds no arrays, so every
# table is written as an object (cjson would turn an empty `scores` into an array too).
_LUA_ENCODE = """
local function num(n)
  local s = string.format('%.15g', n)
  if tonumber(s) ~= n then s = string.format('%.17g', n) end
  return s
end
local function enc(v)
  if v == cjson.null or v == nil then return 'null' end
  local t = type(v)
  if t == 'number' then return num(v) end
  if t == 'table' then
    local parts = {}
    for k, x in pairs(v) do parts[#parts + 1] = cjson.encode(tostring(k)) .. ':' .. enc(x) end
    return '{' .. table.concat(parts, ',') .. '}'
  end
  return cjson.encode(v)
end
"""

_CREATE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

# KEYS: meta, nodes, edges, counter. ARGV: parent id ('' for a root), then one JSON
# object per draft without node_id/parent_id/depth, which are spliced in front of it.
_ADD_NODES_LUA = (
    LUA_INHERIT_TTL
    + _LUA_ENCODE
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'notree'} end
local parent = ARGV[1]
local depth = 0
local parent_json = 'null'
if parent ~= '' then
  local raw = redis.call('HGET', KEYS[2], parent)
  if not raw then return {'nonode', parent} end
  local parent_node = cjson.decode(raw)
  depth = parent_node.depth + 1
  parent_json = cjson.encode(parent)
  -- Children and the parent's new status land together: a resumed search never sees an
  -- open node that already has children.
  if parent_node.status == 'open' then
    parent_node.status = 'expanded'
    redis.call('HSET', KEYS[2], parent, enc(parent_node))
  end
end
local n = #ARGV - 1
local last = redis.call('INCRBY', KEYS[4], n)
local out = {'ok'}
for i = 1, n do
  local id = 'n' .. string.format('%d', last - n + i - 1)
  local head = '{"node_id":' .. cjson.encode(id) .. ',"parent_id":' .. parent_json
    .. ',"depth":' .. string.format('%d', depth) .. ','
  local node = head .. string.sub(ARGV[i + 1], 2)
  redis.call('HSET', KEYS[2], id, node)
  if parent ~= '' then redis.call('ZADD', KEYS[3], 0, parent .. ':' .. id) end
  out[#out + 1] = node
end
inherit_ttl(KEYS[2])
inherit_ttl(KEYS[3])
inherit_ttl(KEYS[4])
return out
"""
)

# KEYS: meta, nodes, frontier. ARGV: node id, score ('' keeps), scores JSON ('' keeps),
# status ('' keeps).
_UPDATE_NODE_LUA = (
    LUA_INHERIT_TTL
    + _LUA_ENCODE
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'notree'} end
local id = ARGV[1]
local raw = redis.call('HGET', KEYS[2], id)
if not raw then return {'nonode', id} end
local node = cjson.decode(raw)
if ARGV[2] ~= '' then node.score = tonumber(ARGV[2]) end
if ARGV[3] ~= '' then
  if type(node.scores) ~= 'table' then node.scores = {} end
  for k, v in pairs(cjson.decode(ARGV[3])) do node.scores[k] = v end
end
if ARGV[4] ~= '' then node.status = ARGV[4] end
local out = enc(node)
redis.call('HSET', KEYS[2], id, out)
local live = node.status == 'open' or node.status == 'expanded'
if live and type(node.score) == 'number' then
  local score = ARGV[2]
  if score == '' then score = num(node.score) end
  redis.call('ZADD', KEYS[3], score, id)
  inherit_ttl(KEYS[3])
else
  redis.call('ZREM', KEYS[3], id)
end
return {'ok', out}
"""
)

# KEYS: meta, nodes. ARGV: value, then the node ids to update (a path, leaf to root).
_BACKPROPAGATE_LUA = (
    _LUA_ENCODE
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'notree'} end
local value = tonumber(ARGV[1])
for i = 2, #ARGV do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 then return {'nonode', ARGV[i]} end
end
for i = 2, #ARGV do
  local node = cjson.decode(redis.call('HGET', KEYS[2], ARGV[i]))
  node.visits = (tonumber(node.visits) or 0) + 1
  node.value_sum = (tonumber(node.value_sum) or 0) + value
  redis.call('HSET', KEYS[2], ARGV[i], enc(node))
end
return {'ok'}
"""
)

_SET_META_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""

# KEYS: every key of the tree, meta first, nodes second, frontier fourth.
# ARGV: status, updated_at, winning path JSON, ttl ms, winning node ids.
_FINISH_LUA = (
    _LUA_ENCODE
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'notree'} end
for i = 5, #ARGV do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 then return {'nonode', ARGV[i]} end
end
for i = 5, #ARGV do
  local node = cjson.decode(redis.call('HGET', KEYS[2], ARGV[i]))
  node.status = 'won'
  redis.call('HSET', KEYS[2], ARGV[i], enc(node))
  redis.call('ZREM', KEYS[4], ARGV[i])
end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'updated_at', ARGV[2], 'winning_path', ARGV[3])
for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, ARGV[4]) end
return {'ok'}
"""
)

_APPEND_EVENT_LUA = (
    LUA_INHERIT_TTL
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*',
  'kind', ARGV[2], 'data', ARGV[3], 'ts', ARGV[4])
inherit_ttl(KEYS[2])
return id
"""
)


# --- encoding helpers ------------------------------------------------------------------


def _check_ttl(name: str, ttl_s: int) -> int:
    # A tree without TTL would outlive everyone who could finish it; insist on one.
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or ttl_s <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {ttl_s!r}")
    return ttl_s * 1000


def _check_status(status: str, allowed: frozenset[str], what: str) -> str:
    if status not in allowed:
        raise ValueError(f"{what} status {status!r} is not one of {sorted(allowed)}")
    return status


def _finite(name: str, value: float) -> float:
    # JSON has no NaN/inf, and a NaN frontier score would sort unpredictably.
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


def _meta_to_hash(meta: TreeMeta) -> dict[str, str]:
    data: dict[str, str] = {
        "tree_id": meta.tree_id,
        "owner": meta.owner,
        "effort": _plain(meta.effort),
        "strategy": meta.strategy,
        "status": _check_status(meta.status, TREE_STATUSES, "tree"),
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


def _draft_body(draft: NodeDraft, now: float) -> str:
    _check_status(draft.status, NODE_STATUSES, "node")
    body = {
        "text": draft.text,
        "prompt_tokens": int(draft.prompt_tokens),
        "completion_tokens": int(draft.completion_tokens),
        "cached_tokens": int(draft.cached_tokens),
        "score": None,
        "scores": {},
        "status": draft.status,
        "answer": draft.answer,
        "replica": draft.replica,
        "created_at": now,
        "logprob": None if draft.logprob is None else _finite("logprob", draft.logprob),
        "visits": 0,
        "value_sum": 0.0,
    }
    return json.dumps(body, separators=(",", ":"))


def _node_order(node: ThoughtNode) -> tuple[int, str]:
    # Ids are "n<counter>": numeric order is creation order, which lexicographic is not.
    digits = node.node_id[1:]
    return (int(digits) if digits.isdigit() else -1, node.node_id)


def _reply_items(reply: Any) -> list[str]:
    return [as_text(item) for item in reply]


async def _await(value: Awaitable[Any] | Any) -> Any:
    # redis-py types commands as "awaitable or value" for its sync/async shared mixins;
    # on the asyncio client it is always awaitable.
    return await value


# --- the store -------------------------------------------------------------------------


class TreeStore:
    """Reads and writes thought trees; safe to share between tasks of one event loop."""

    def __init__(self, redis: Redis, keys: KeySpace | None = None) -> None:
        self._redis = redis
        self._keys = keys or KeySpace()
        self._create = redis.register_script(_CREATE_LUA)
        self._add_nodes = redis.register_script(_ADD_NODES_LUA)
        self._update_node = redis.register_script(_UPDATE_NODE_LUA)
        self._set_meta = redis.register_script(_SET_META_LUA)
        self._backpropagate = redis.register_script(_BACKPROPAGATE_LUA)
        self._finish = redis.register_script(_FINISH_LUA)
        self._append_event = redis.register_script(_APPEND_EVENT_LUA)

    def keys(self, tree_id: str) -> TreeKeys:
        return self._keys.tree(tree_id)

    def _raise_for(self, tree_id: str, reply: list[str]) -> None:
        if reply[0] == "notree":
            raise TreeNotFoundError(tree_id)
        if reply[0] == "nonode":
            raise NodeNotFoundError(tree_id, reply[1])

    # -- tree lifecycle --

    async def create_tree(self, meta: TreeMeta, active_ttl_s: int) -> None:
        """Record a new tree; it expires after `active_ttl_s` unless finished earlier."""
        ttl_ms = _check_ttl("active_ttl_s", active_ttl_s)
        args: list[str] = [str(ttl_ms)]
        for name, value in _meta_to_hash(meta).items():
            args += [name, value]
        created = await self._create(keys=[self.keys(meta.tree_id).meta], args=args)
        if not int(created):
            raise TreeExistsError(f"thought tree {meta.tree_id!r} already exists")

    async def set_meta_fields(self, tree_id: str, /, **fields: str | float) -> None:
        """Set TreeMeta fields by name; unknown names become `extra` notes."""
        values = {"updated_at": repr(time.time())}
        for name, value in fields.items():
            values[_meta_field_name(name)] = _meta_field_value(name, value)
        args = [item for pair in values.items() for item in pair]
        if not int(await self._set_meta(keys=[self.keys(tree_id).meta], args=args)):
            raise TreeNotFoundError(tree_id)

    async def finish_tree(
        self,
        tree_id: str,
        status: FinalTreeStatus,
        winning_path: Sequence[str],
        result_ttl_s: int,
    ) -> None:
        """Mark the winning nodes, record the outcome, and expire the tree after a TTL."""
        _check_status(status, FINAL_TREE_STATUSES, "final tree")
        ttl_ms = _check_ttl("result_ttl_s", result_ttl_s)
        path = list(winning_path)
        args = [status, repr(time.time()), json.dumps(path), str(ttl_ms), *path]
        reply = _reply_items(await self._finish(keys=list(self.keys(tree_id).all()), args=args))
        self._raise_for(tree_id, reply)

    # -- nodes --

    async def add_nodes(
        self, tree_id: str, parent_id: str | None, drafts: Sequence[NodeDraft]
    ) -> list[ThoughtNode]:
        """Add children of `parent_id` (roots when None) in one atomic step."""
        if not drafts:
            return []
        now = time.time()
        keys = self.keys(tree_id)
        args = [parent_id or "", *(_draft_body(d, now) for d in drafts)]
        reply = await self._add_nodes(keys=[keys.meta, keys.nodes, keys.edges, keys.counter], args=args)
        items = _reply_items(reply)
        self._raise_for(tree_id, items)
        return [ThoughtNode.from_json(raw) for raw in items[1:]]

    async def update_node(
        self,
        tree_id: str,
        node_id: str,
        *,
        score: float | None = None,
        scores: Mapping[str, float] | None = None,
        status: NodeStatus | None = None,
    ) -> ThoughtNode:
        """Set score/status and merge per-verifier scores; keeps the frontier in step."""
        args = [
            node_id,
            "" if score is None else repr(_finite("score", score)),
            "" if scores is None else json.dumps({k: _finite(k, v) for k, v in scores.items()}),
            "" if status is None else _check_status(status, NODE_STATUSES, "node"),
        ]
        keys = self.keys(tree_id)
        reply = await self._update_node(keys=[keys.meta, keys.nodes, keys.frontier], args=args)
        items = _reply_items(reply)
        self._raise_for(tree_id, items)
        return ThoughtNode.from_json(items[1])

    async def backpropagate(self, tree_id: str, node_ids: Sequence[str], value: float) -> None:
        """Count one evaluation of `value` on every node of a path, in one atomic step."""
        if not node_ids:
            return
        keys = self.keys(tree_id)
        args = [repr(_finite("value", value)), *node_ids]
        reply = _reply_items(await self._backpropagate(keys=[keys.meta, keys.nodes], args=args))
        self._raise_for(tree_id, reply)

    async def get_node(self, tree_id: str, node_id: str) -> ThoughtNode | None:
        raw = await _await(self._redis.hget(self.keys(tree_id).nodes, node_id))
        return None if raw is None else ThoughtNode.from_json(raw)

    async def _nodes_by_id(self, tree_id: str, node_ids: Sequence[str]) -> list[ThoughtNode]:
        if not node_ids:
            return []
        raws = await _await(self._redis.hmget(self.keys(tree_id).nodes, list(node_ids)))
        return [ThoughtNode.from_json(raw) for raw in raws if raw is not None]

    async def children(self, tree_id: str, node_id: str) -> list[ThoughtNode]:
        """Children in creation order, found through the edge index, not a full scan."""
        # ';' is the byte after ':', so this range is exactly the members "<node_id>:*".
        members = await _await(
            self._redis.zrangebylex(self.keys(tree_id).edges, f"[{node_id}:", f"({node_id};")
        )
        child_ids = [as_text(m).split(":", 1)[1] for m in members]
        return sorted(await self._nodes_by_id(tree_id, child_ids), key=_node_order)

    async def frontier(self, tree_id: str, limit: int) -> list[ThoughtNode]:
        """The best-scored open/expanded nodes, best first."""
        if limit <= 0:
            return []
        ids = await _await(self._redis.zrevrange(self.keys(tree_id).frontier, 0, limit - 1))
        nodes = await self._nodes_by_id(tree_id, [as_text(i) for i in ids])
        # Between the two reads a node may have been pruned; trust its own status.
        return [n for n in nodes if n.status in FRONTIER_STATUSES]

    # -- reads of the whole tree --

    async def get_meta(self, tree_id: str) -> TreeMeta | None:
        raw = await _await(self._redis.hgetall(self.keys(tree_id).meta))
        return _meta_from_hash(raw) if raw else None

    async def get_tree(self, tree_id: str) -> ThoughtTree | None:
        """Meta, all nodes, winning path and budget, read in one MULTI so they agree."""
        keys = self.keys(tree_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(keys.meta)
            pipe.hgetall(keys.nodes)
            pipe.hgetall(keys.budget)
            meta_raw, nodes_raw, budget_raw = await pipe.execute()
        if not meta_raw:
            return None
        meta_text = {as_text(k): as_text(v) for k, v in meta_raw.items()}
        nodes = sorted((ThoughtNode.from_json(v) for v in nodes_raw.values()), key=_node_order)
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


def _meta_field_name(name: str) -> str:
    if name == "tree_id" or name == _WINNING_PATH or name == "extra":
        raise ValueError(f"meta field {name!r} cannot be set with set_meta_fields")
    if name in {f.name for f in dataclass_fields(TreeMeta)}:
        return name
    return _EXTRA_PREFIX + name


def _meta_field_value(name: str, value: str | float) -> str:
    if name in _FLOAT_META:
        return repr(_finite(name, float(value)))
    if name == "status":
        return _check_status(str(value), TREE_STATUSES, "tree")
    if name == "question":
        return str(value)[:QUESTION_PREVIEW_CHARS]
    return _plain(value)


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
