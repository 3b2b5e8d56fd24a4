"""Prefix-cache affinity routing for the branch-generator deployment (a Serve request router).

Every engine call of one thought tree starts with the tree's prompt, and the engine that served
the tree before holds that prefix in its cache. A call whose GenerationRequest carries an
affinity key (the tree id) goes to the replica the key hashes to, by rendezvous hashing over
the current replica ids: every handle (planner, verifier) picks the same replica without
sharing any state, a key stays put while the replicas do, and when a replica goes only its own
keys move. Affinity never buys a long wait: a replica queueing more than `max_imbalance`
requests beyond the least-loaded one is passed over for power of two choices, and so is a full
one (Serve skips a replica at max_ongoing_requests and tries the next rank). Calls without a
key are balanced by power of two choices, as Serve's default router does.

Serve pickles this module by value into every process that holds a handle to the generators,
so it imports only what those processes have anyway.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ray.serve.request_router import LocalityMixin, PendingRequest, RequestRouter, RunningReplica

from cluster.types import GenerationRequest

if TYPE_CHECKING:
    from ray.serve._private.common import RequestMetadata

logger = logging.getLogger(__name__)

# The router's import path, for `request_router_config` (Serve imports it by name).
AFFINITY_ROUTER = "deployments.routing:AffinityRouter"

T = TypeVar("T")


def affinity_key(args: Sequence[Any]) -> str | None:
    """The affinity key of a call whose first argument is a GenerationRequest; None otherwise."""
    first = args[0] if args else None
    return first.affinity_key if isinstance(first, GenerationRequest) else None


def _weight(key: str, replica_id: str) -> int:
    # A stable hash (Python's hash() is salted per process): every router must agree.
    digest = hashlib.blake2b(f"{key}\x00{replica_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def preferred_replica(key: str, replica_ids: Collection[str]) -> str:
    """The replica `key` belongs to: the highest hash of (key, replica), rendezvous hashing."""
    if not replica_ids:
        raise ValueError(f"no replica to place affinity key {key!r} on")
    return max(replica_ids, key=lambda replica_id: (_weight(key, replica_id), replica_id))


def overloaded(replica_id: str, queue_lens: Mapping[str, int], max_imbalance: int) -> bool:
    """Whether `replica_id` queues more than `max_imbalance` requests beyond the least-loaded replica.

    A replica whose queue length is unknown counts as not overloaded: it still refuses
    requests past its max_ongoing_requests, and the next rank takes them.
    """
    own = queue_lens.get(replica_id)
    return own is not None and own - min(queue_lens.values()) > max_imbalance


def affinity_target(
    key: str, replica_ids: Collection[str], queue_lens: Mapping[str, int], max_imbalance: int
) -> str | None:
    """The replica for `key`, or None when it is overloaded and the call should be balanced."""
    preferred = preferred_replica(key, replica_ids)
    return None if overloaded(preferred, queue_lens, max_imbalance) else preferred


def two_choices(candidates: Sequence[T], rng: random.Random) -> list[T]:
    """Two distinct random candidates (all of them if fewer): power of two choices.

    Serve sends the call to whichever of them has the shorter queue.
    """
    return rng.sample(list(candidates), min(2, len(candidates)))


class AffinityRouter(LocalityMixin, RequestRouter):
    """Routes calls with an affinity key to their key's replica; balances everything else.

    Unlike Serve's default router it leaves out FIFOMixin on purpose: that mixin hands a chosen
    replica to the oldest waiting request, which would send one tree's call to the replica
    chosen for another tree. Each replica goes to the very call it was chosen for instead.
    """

    # The base takes **kwargs; naming ours makes a misspelt request_router_kwargs key an error.
    def initialize_state(self, max_imbalance: int) -> None:  # type: ignore[override]
        """Serve calls this with `request_router_kwargs` (deployments.builder passes them)."""
        self._max_imbalance = max_imbalance
        self._rng = random.Random()

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        balanced = self._two_choices(pending_request)
        key = affinity_key(pending_request.args) if pending_request is not None else None
        if key is None or not candidate_replicas:
            return [balanced]
        by_id = {replica.replica_id.unique_id: replica for replica in candidate_replicas}
        queue_lens = await self._queue_lens(candidate_replicas)
        target = affinity_target(key, by_id, queue_lens, self._max_imbalance)
        if target is None:
            logger.debug("affinity key %s: replica over the imbalance margin, balancing instead", key)
            return [balanced]
        # Ranks in order: the key's replica, then (if it is full) the balanced pair.
        return [[by_id[target]], balanced]

    def _fulfill_next_pending_request(
        self, replica: RunningReplica, request_metadata: RequestMetadata | None = None
    ) -> None:
        """Hand `replica` to the call it was chosen for (Serve's routing loop calls this).

        Serve's base class looks that call up by internal_request_id, but every handle call a
        replica makes while serving one request shares that id (a planner's concurrent
        expansions of one tree): looked up by id, all but one of them would wait forever.
        The call's own metadata object tells them apart.
        """
        for pending in self._pending_requests_to_fulfill:
            if pending.metadata is request_metadata and not pending.future.done():
                self._record_queue_wait_time(pending)
                pending.future.set_result(replica)
                self._remove_pending_request_from_indices(pending)
                return

    def _two_choices(self, pending_request: PendingRequest | None) -> list[RunningReplica]:
        # The pool comes from Serve's locality preference (same node first), as in its default.
        replicas = self.curr_replicas
        pool = [replicas[i] for i in self.apply_locality_routing(pending_request) if i in replicas]
        return two_choices(pool, self._rng)

    async def _queue_lens(self, replicas: Sequence[RunningReplica]) -> dict[str, int]:
        """Queue lengths from Serve's cache; replicas without a fresh entry are asked."""
        known: dict[str, int] = {}
        stale: list[RunningReplica] = []
        for replica in replicas:
            queue_len = self.replica_queue_len_cache.get(replica.replica_id)
            if queue_len is None:
                stale.append(replica)
            else:
                known[replica.replica_id.unique_id] = queue_len
        if stale:
            # The same probe Serve's own selection uses; it refreshes the cache as well.
            for replica, queue_len in await self._probe_queue_lens(stale, 0):
                if queue_len is not None:
                    known[replica.replica_id.unique_id] = queue_len
        return known
