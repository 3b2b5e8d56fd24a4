"""Redis-backed state of the reasoning cluster: thought trees, budgets, and a test server."""

from cluster.store.budget import BudgetLedger, BudgetSnapshot, Reservation
from cluster.store.keys import DEFAULT_PREFIX, KeySpace, TreeKeys, TreeNotFoundError
from cluster.store.lease import Lease, LeaseBusyError, LeaseLostError, TreeLeases
from cluster.store.redis_server import EmbeddedRedis, RedisServerError, find_redis_server
from cluster.store.tree import (
    EVENTS_MAXLEN,
    FinalTreeStatus,
    NodeDraft,
    NodeNotFoundError,
    NodeStatus,
    ThoughtNode,
    ThoughtTree,
    TreeExistsError,
    TreeMeta,
    TreeStatus,
    TreeStore,
)

__all__ = [
    "DEFAULT_PREFIX",
    "EVENTS_MAXLEN",
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
    "find_redis_server",
]
