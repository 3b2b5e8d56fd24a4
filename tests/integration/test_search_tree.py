"""The planner's in-memory tree: indexes against brute force, batched persistence, resume, fencing."""

from __future__ import annotations

import random
import time

import pytest
from redis.asyncio import Redis

from bench.tree_growth import RoundTrips
from cluster.config import RedisConfig, TaskSettings
from cluster.search.tree import SearchTree
from cluster.store import (
    KeySpace,
    LeaseLostError,
    NodeDraft,
    NodeStatus,
    ThoughtNode,
    TreeLeases,
    TreeMeta,
    TreeStore,
)
from cluster.store.nodes import NODE_STATUSES
from cluster.tasks import get_task, pose
from cluster.types import ChatMessage
from monitoring.metrics import instrumented_redis

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

PROBLEM = pose((ChatMessage("user", "Grow a tree."),), "general")
TASK_SETTINGS = TaskSettings()
STATUSES: list[NodeStatus] = sorted(NODE_STATUSES)  # type: ignore[arg-type]


async def new_tree(redis: Redis, tree_id: str, fence: str | None = None) -> tuple[TreeStore, SearchTree]:
    store = TreeStore(redis, KeySpace("t"))
    await store.create_tree(TreeMeta(tree_id, "tenant", "high", "mcts", created_at=time.time()), 600)
    tree = SearchTree(tree_id, store, get_task("general").step_format(PROBLEM, TASK_SETTINGS), fence)
    return store, tree


async def grow_randomly(tree: SearchTree, rng: random.Random, expansions: int) -> None:
    """Random expansions, status changes, scores and visits, flushed at random points."""
    await tree.start(PROBLEM.question)
    for step in range(expansions):
        parent = rng.choice([tree.root, *tree.steps()])
        drafts = [
            NodeDraft(f"{step}.{i}", completion_tokens=rng.randint(1, 9)) for i in range(rng.randint(0, 3))
        ]
        await tree.add_children(parent, drafts)
        for node in rng.sample(tree.steps(), min(3, len(tree.steps()))):
            tree.set_status([node.node_id], rng.choice(STATUSES))
            tree.record_scores(node.node_id, rng.random(), {"v": rng.random()}, {"v": f"reason {step}"})
            tree.visit(tree.path_to(node), rng.random())
        if rng.random() < 0.3:
            await tree.flush()
    await tree.flush()


def brute_children(nodes: list[ThoughtNode], parent: ThoughtNode) -> list[str]:
    return [n.node_id for n in nodes if n.parent_id == parent.node_id]


def brute_path(nodes: list[ThoughtNode], node: ThoughtNode) -> list[str]:
    by_id = {n.node_id: n for n in nodes}
    path = []
    current = node
    while current.parent_id is not None:
        path.append(current.node_id)
        current = by_id[current.parent_id]
    return path[::-1]


@pytest.mark.parametrize("seed", range(5))
async def test_indexes_agree_with_a_brute_force_scan_and_with_redis(redis_client: Redis, seed: int) -> None:
    store, tree = await new_tree(redis_client, f"random-{seed}")
    await grow_randomly(tree, random.Random(seed), expansions=60)

    nodes = [tree.root, *tree.steps()]
    assert len(tree) == len(nodes)
    for node in nodes:
        assert [c.node_id for c in tree.children(node)] == brute_children(nodes, node)
        assert [n.node_id for n in tree.path_to(node)] == brute_path(nodes, node)
    for status in STATUSES:
        assert [n.node_id for n in tree.with_status(status)] == [
            n.node_id for n in nodes if n.status == status
        ]
        assert tree.count(status) == sum(1 for n in nodes if n.status == status)
    assert [n.node_id for n in tree.open_steps()] == [
        n.node_id for n in nodes if n.status == "open" and n.parent_id is not None
    ]
    assert tree.deepest == max(n.depth for n in nodes)

    # What Redis holds is what the planner holds (visit sums up to float rounding).
    stored = await store.get_tree(tree.tree_id)
    assert stored is not None
    assert [_comparable(n) for n in stored.nodes] == [_comparable(n) for n in nodes]

    # A planner that takes the tree over rebuilds the same tree, indexes included.
    _, resumed = await new_tree(redis_client, "unused")
    resumed.tree_id = tree.tree_id
    assert await resumed.load()
    assert [_comparable(n) for n in [resumed.root, *resumed.steps()]] == [_comparable(n) for n in nodes]
    for node in nodes:
        assert [c.node_id for c in resumed.children(node)] == brute_children(nodes, node)


def _comparable(node: ThoughtNode) -> tuple[object, ...]:
    return (
        node.node_id,
        node.parent_id,
        node.depth,
        node.text,
        node.status,
        node.score,
        node.scores,
        node.verdicts,
        node.visits,
        round(node.value_sum, 9),
        node.completion_tokens,
    )


async def test_an_expansion_and_its_queued_changes_are_one_round_trip(redis_server: str) -> None:
    trips = RoundTrips()
    redis = instrumented_redis(RedisConfig(url=redis_server), trips)
    try:
        await check_one_round_trip(redis, trips)
    finally:
        await redis.aclose()


async def check_one_round_trip(redis_client: Redis, trips: RoundTrips) -> None:
    store, tree = await new_tree(redis_client, "batched")
    root = await tree.start(PROBLEM.question)
    [first, second] = await tree.add_children(root, [NodeDraft("a"), NodeDraft("b")])
    tree.record_scores(first.node_id, 0.25, {"v": 0.25}, {"v": "why"})
    tree.set_status([second.node_id], "pruned")
    tree.visit([root, first], 0.5)
    tree.event("progress", {"depth": 1})

    before = trips.count
    [child] = await tree.add_children(first, [NodeDraft("c")])
    assert trips.count - before == 1

    stored = await store.get_tree("batched")
    assert stored is not None
    by_id = {n.node_id: n for n in stored.nodes}
    assert by_id[first.node_id].scores == {"v": 0.25} and by_id[first.node_id].verdicts == {"v": "why"}
    assert by_id[first.node_id].status == "expanded"  # it got a child in the same batch
    assert by_id[second.node_id].status == "pruned"
    assert (by_id[root.node_id].visits, by_id[first.node_id].value_sum) == (1, 0.5)
    assert by_id[child.node_id].depth == 2 and by_id[child.node_id].parent_id == first.node_id
    events = await store.read_events("batched")
    assert [e["kind"] for _, e in events] == ["progress"]

    before = trips.count
    await tree.flush()  # nothing queued: no round trip
    assert trips.count == before


async def test_a_planner_that_lost_its_lease_cannot_write(redis_client: Redis) -> None:
    leases = TreeLeases(redis_client, KeySpace("t"), ttl_s=30)
    store, _ = await new_tree(redis_client, "fenced")
    old = await leases.acquire("fenced", "old-planner")
    stale = SearchTree("fenced", store, get_task("general").step_format(PROBLEM, TASK_SETTINGS), old.token)
    root = await stale.start(PROBLEM.question)

    # The old planner stalls past its lease; another planner takes the tree over.
    await redis_client.delete(store.keys("fenced").lease)
    new = await leases.acquire("fenced", "new-planner")
    current = SearchTree("fenced", store, get_task("general").step_format(PROBLEM, TASK_SETTINGS), new.token)
    assert await current.load()

    stale.record_scores(root.node_id, 0.0, {"v": 0.0}, {"v": "stale"})
    with pytest.raises(LeaseLostError):
        await stale.add_children(root, [NodeDraft("late")])
    with pytest.raises(LeaseLostError):
        await store.set_meta_fields("fenced", fence=old.token, answer="stale")
    with pytest.raises(LeaseLostError):
        await store.finish_tree("fenced", "done", [root.node_id], 60, fence=old.token)

    stored = await store.get_tree("fenced")
    assert stored is not None
    assert [n.node_id for n in stored.nodes] == [root.node_id]
    assert (
        stored.nodes[0].scores == {} and stored.meta.status == "running" and "answer" not in stored.meta.extra
    )
    await current.add_children(current.root, [NodeDraft("mine")])
    assert len((await store.get_tree("fenced")).nodes) == 2  # type: ignore[union-attr]
