"""Redis-backed state of the reasoning cluster: thought trees, budgets, and a test server."""

from cluster.store.budget import TOKENS, VERIFIER_CALLS, BudgetLedger, BudgetSnapshot, Reservation
from cluster.store.keys import DEFAULT_PREFIX, KeySpace, TreeKeys, TreeNotFoundError
from cluster.store.lease import Lease, LeaseBusyError, LeaseLostError, TreeLeases
from cluster.store.nodes import NodeDraft, NodeStatus, ThoughtNode
from cluster.store.redis_server import EmbeddedRedis, RedisServerError, find_redis_server
from cluster.store.tree import (
    EVENTS_MAXLEN,
    FinalTreeStatus,
    NodeNotFoundError,
    ThoughtTree,
    TreeExistsError,
    TreeMeta,
    TreeStatus,
    TreeStore,
    TreeWrite,
)

__all__ = [
    "DEFAULT_PREFIX",
    "EVENTS_MAXLEN",
    "TOKENS",
    "VERIFIER_CALLS",
    "BudgetLedger",
    "BudgetSnapshot",
    "EmbeddedRedis",
    "FinalTreeStatus",
    "KeySpace",
    "Lease",
    "LeaseBusyError",
    "LeaseLostError",
    "NodeDraft",
    "NodeNotFoundError",
    "NodeStatus",
    "RedisServerError",
    "Reservation",
    "ThoughtNode",
    "ThoughtTree",
    "TreeExistsError",
    "TreeKeys",
    "TreeLeases",
    "TreeMeta",
    "TreeNotFoundError",
    "TreeStatus",
    "TreeStore",
    "TreeWrite",
    "find_redis_server",
]
