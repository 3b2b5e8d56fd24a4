"""TreeStore against a real redis-server: writes, reads, races, TTLs, events, slots."""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import replace

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from cluster.store import (
    EVENTS_MAXLEN,
    BudgetLedger,
    KeySpace,
    NodeDraft,
    NodeNotFoundError,
    ThoughtNode,
    TreeExistsError,
    TreeMeta,
    TreeNotFoundError,
    TreeStore,
)
from cluster.types import Effort

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

ACTIVE_TTL_S = 600


def make_meta(tree_id: str = "t1", **overrides: object) -> TreeMeta:
    values: dict[str, object] = {
        "tree_id": tree_id,
        "owner": "tenant-a",
        "effort": "high",
        "strategy": "beam",
        "created_at": 1700000000.25,
        "updated_at": 1700000000.25,
        "model": "SmolLM2-135M-Instruct",
        "question": "What is 2+2?",
        "extra": {"difficulty": "easy"},
    }
    values.update(overrides)
    return TreeMeta(**values)  # type: ignore[arg-type]


async def new_tree(store: TreeStore, tree_id: str = "t1", ttl_s: int = ACTIVE_TTL_S) -> ThoughtNode:
    await store.create_tree(make_meta(tree_id), active_ttl_s=ttl_s)
    [root] = await store.add_nodes(tree_id, None, [NodeDraft("Let's think.", prompt_tokens=12)])
    return root


def every_key(store: TreeStore, tree_id: str, nodes: int) -> tuple[str, ...]:
    """The tree's fixed keys and the hashes of its first `nodes` nodes."""
    keys = store.keys(tree_id)
    return (*keys.all(), *(keys.node(f"n{i}") for i in range(nodes)))


async def existing_keys(client: Redis, store: TreeStore, tree_id: str, nodes: int = 0) -> list[str]:
    return [k for k in every_key(store, tree_id, nodes) if await client.exists(k)]


async def test_create_and_read_tree(redis_client: Redis) -> None:
    store = TreeStore(redis_client)
    root = await new_tree(store)
    kids = await store.add_nodes(
        "t1",
        root.node_id,
        [
            NodeDraft("step a", prompt_tokens=40, completion_tokens=7, cached_tokens=30, replica="r0"),
            NodeDraft("answer: 4", completion_tokens=3, answer="4", status="answer"),
        ],
    )

    assert root.node_id == "n0" and root.parent_id is None and root.depth == 0
    assert [k.node_id for k in kids] == ["n1", "n2"]
    assert all(k.parent_id == "n0" and k.depth == 1 for k in kids)
    assert (kids[0].prompt_tokens, kids[0].completion_tokens, kids[0].cached_tokens) == (40, 7, 30)
    assert kids[0].replica == "r0" and kids[1].answer == "4" and kids[1].status == "answer"
    assert await store.get_node("t1", "n1") == kids[0]
    assert await store.get_node("t1", "n99") is None

    assert await store.get_meta("t1") == make_meta()
    tree = await store.get_tree("t1")
    assert tree is not None
    assert [n.node_id for n in tree.nodes] == ["n0", "n1", "n2"]
    assert tree.winning_path == []
    # to_dict is what the gateway serialises: it must be plain JSON.
    assert json.loads(json.dumps(tree.to_dict()))["nodes"][1]["text"] == "step a"

    with pytest.raises(TreeExistsError):
        await store.create_tree(make_meta(), active_ttl_s=ACTIVE_TTL_S)


async def test_meta_fields_and_enum_values(redis_client: Redis) -> None:
    store = TreeStore(redis_client)
    await store.create_tree(make_meta(effort=Effort.MEDIUM, question="q" * 1000), ACTIVE_TTL_S)
    await store.set_meta_fields("t1", strategy="bfs", difficulty="hard", branches_seen="12")

    meta = await store.get_meta("t1")
    assert meta is not None
    assert meta.effort == "medium"
    assert len(meta.question) < 1000
    assert meta.strategy == "bfs"
    assert meta.extra == {"difficulty": "hard", "branches_seen": "12"}
    assert meta.updated_at > 1700000000.25

    with pytest.raises(ValueError):
        await store.set_meta_fields("t1", status="bogus")
    with pytest.raises(ValueError):
        await store.set_meta_fields("t1", tree_id="other")
    with pytest.raises(TreeNotFoundError):
        await store.set_meta_fields("missing", strategy="x")
    assert await redis_client.exists(store.keys("missing").meta) == 0


async def test_missing_tree_and_parent(redis_client: Redis) -> None:
    store = TreeStore(redis_client)
    with pytest.raises(TreeNotFoundError):
        await store.add_nodes("nope", None, [NodeDraft("x")])
    assert await store.get_tree("nope") is None
    assert await store.get_meta("nope") is None
    # A failed write must not leave keys behind that would never expire.
    assert await existing_keys(redis_client, store, "nope") == []

    await new_tree(store)
    with pytest.raises(NodeNotFoundError):
        await store.add_nodes("t1", "n42", [NodeDraft("orphan")])
    assert await store.add_nodes("t1", "n0", []) == []
    tree = await store.get_tree("t1")
    assert tree is not None and len(tree.nodes) == 1


async def test_children_do_not_leak_between_prefix_ids(redis_client: Redis) -> None:
    store = TreeStore(redis_client)
    root = await new_tree(store)
    level1 = await store.add_nodes("t1", root.node_id, [NodeDraft(f"s{i}") for i in range(12)])
    ids = [n.node_id for n in level1]
    assert ids == [f"n{i}" for i in range(1, 13)]
    # n1, n10, n11 and n12 share a prefix; a sloppy range query would mix their children.
    under_n1 = await store.add_nodes("t1", "n1", [NodeDraft("a"), NodeDraft("b")])
    under_n10 = await store.add_nodes("t1", "n10", [NodeDraft("c")])

    assert [n.node_id for n in await store.children("t1", "n1")] == [n.node_id for n in under_n1]
    assert [n.node_id for n in await store.children("t1", "n10")] == [n.node_id for n in under_n10]
    assert await store.children("t1", "n11") == []
    root_children = await store.children("t1", root.node_id)
    assert [n.node_id for n in root_children] == ids  # numeric, not lexicographic, order
    assert all(n.depth == 2 for n in under_n1 + under_n10)


async def test_frontier_tracks_scores_and_statuses(redis_client: Redis) -> None:
    store = TreeStore(redis_client)
    root = await new_tree(store)
    kids = await store.add_nodes("t1", root.node_id, [NodeDraft(f"s{i}") for i in range(5)])
    n = [k.node_id for k in kids]

    assert await store.frontier("t1", 10) == []  # open but unscored: not yet rankable
    for node_id, score in zip(n, [0.2, 0.9, 0.5, 0.7, 0.1], strict=True):
        await store.update_node("t1", node_id, score=score)
    assert [x.node_id for x in await store.frontier("t1", 10)] == [n[1], n[3], n[2], n[0], n[4]]
    assert [x.node_id for x in await store.frontier("t1", 2)] == [n[1], n[3]]

    await store.update_node("t1", n[1], status="pruned")
    await store.update_node("t1", n[3], status="answer")
    await store.update_node("t1", n[2], status="expanded")
    assert [x.node_id for x in await store.frontier("t1", 10)] == [n[2], n[0], n[4]]

    # Re-opening a scored node puts it back with its stored score.
    await store.update_node("t1", n[1], status="open")
    assert [x.node_id for x in await store.frontier("t1", 1)] == [n[1]]
    assert await store.frontier("t1", 0) == []


async def test_update_merges_scores_exactly(redis_client: Redis) -> None:
    store = TreeStore(redis_client)
    root = await new_tree(store)

    first = await store.update_node("t1", root.node_id, score=1 / 3, scores={"arith": 0.1})
    second = await store.update_node("t1", root.node_id, scores={"judge": 2 / 3, "tiny": 1e-300})
    third = await store.update_node("t1", root.node_id, scores={"arith": 1.0}, status="expanded")

    assert first.score == 1 / 3
    # Redis' own cjson keeps 14 digits; the store must round-trip doubles exactly.
    assert second.scores == {"arith": 0.1, "judge": 2 / 3, "tiny": 1e-300}
    assert second.score == 1 / 3 and second.text == root.text
    assert third.scores == {"arith": 1.0, "judge": 2 / 3, "tiny": 1e-300}
    assert third.status == "expanded"
    assert await store.get_node("t1", root.node_id) == third
    zscore = await redis_client.zscore(store.keys("t1").frontier, root.node_id)
    assert zscore == 1 / 3

    with pytest.raises(NodeNotFoundError):
        await store.update_node("t1", "n77", score=0.5)
    with pytest.raises(ValueError):
        await store.update_node("t1", root.node_id, score=float("nan"))
    with pytest.raises(ValueError):
        await store.update_node("t1", root.node_id, status="bogus")  # type: ignore[arg-type]


async def test_concurrent_add_nodes_get_unique_ids_and_depths(redis_server: str) -> None:
    # Separate clients (and so connections) per writer, like separate generator replicas.
    clients = [Redis.from_url(redis_server) for _ in range(8)]
    stores = [TreeStore(c) for c in clients]
    try:
        await clients[0].flushdb()
        root = await new_tree(stores[0])
        rng = random.Random(7)

        async def grow_chain(worker: int) -> list[ThoughtNode]:
            store = stores[worker % len(stores)]
            made: list[ThoughtNode] = []
            parent = root
            for _ in range(6):
                batch = await store.add_nodes(
                    "t1", parent.node_id, [NodeDraft(f"w{worker}") for _ in range(rng.randint(1, 3))]
                )
                made += batch
                parent = batch[0]
            return made

        results = await asyncio.gather(*(grow_chain(w) for w in range(40)))
        created = [node for chain in results for node in chain]
        ids = [node.node_id for node in created]
        assert len(set(ids)) == len(ids)

        tree = await stores[0].get_tree("t1")
        assert tree is not None
        assert len(tree.nodes) == len(created) + 1
        by_id = {n.node_id: n for n in tree.nodes}
        assert set(ids) | {root.node_id} == set(by_id)
        # A node that got children was marked expanded in the same atomic step.
        parents = {n.parent_id for n in created}
        for node in created:
            assert node.parent_id is not None
            assert node.depth == by_id[node.parent_id].depth + 1
            expected_status = "expanded" if node.node_id in parents else "open"
            assert by_id[node.node_id] == replace(node, status=expected_status)
        # The edge index agrees with the parent links stored in the nodes.
        for parent_id in {n.parent_id for n in created}:
            assert parent_id is not None
            expected = sorted(n.node_id for n in created if n.parent_id == parent_id)
            got = sorted(n.node_id for n in await stores[0].children("t1", parent_id))
            assert got == expected
    finally:
        for client in clients:
            await client.aclose()


async def test_finish_marks_winner_and_sets_result_ttl(redis_client: Redis) -> None:
    store = TreeStore(redis_client)
    root = await new_tree(store)
    a, b = await store.add_nodes("t1", root.node_id, [NodeDraft("a"), NodeDraft("b")])
    [answer] = await store.add_nodes("t1", a.node_id, [NodeDraft("= 4", answer="4", status="answer")])
    await store.update_node("t1", a.node_id, score=0.8)
    await store.update_node("t1", b.node_id, score=0.3)
    await store.append_event("t1", "expand", {"node": a.node_id})
    await BudgetLedger(redis_client).grant("t1", {"tokens": 100})

    with pytest.raises(ValueError):
        await store.finish_tree("t1", "running", [], 60)  # type: ignore[arg-type]
    with pytest.raises(NodeNotFoundError):
        await store.finish_tree("t1", "done", [root.node_id, "n404"], 60)
    assert (await store.get_meta("t1")).status == "running"  # type: ignore[union-attr]
    assert (await store.get_node("t1", root.node_id)).status == "expanded"  # type: ignore[union-attr]

    path = [root.node_id, a.node_id, answer.node_id]
    await store.finish_tree("t1", "done", path, result_ttl_s=120)

    tree = await store.get_tree("t1")
    assert tree is not None
    assert tree.meta.status == "done"
    assert tree.winning_path == path
    statuses = {n.node_id: n.status for n in tree.nodes}
    assert statuses == {root.node_id: "won", a.node_id: "won", answer.node_id: "won", b.node_id: "open"}
    assert [n.node_id for n in await store.frontier("t1", 10)] == [b.node_id]

    present = await existing_keys(redis_client, store, "t1", nodes=4)
    assert len(present) == len(every_key(store, "t1", nodes=4))  # every key kind was written above
    for key in present:
        ttl = await redis_client.ttl(key)
        assert 100 < ttl <= 120, (key, ttl)


async def test_ttl_expiry_removes_every_key(redis_client: Redis) -> None:
    store = TreeStore(redis_client)
    ledger = BudgetLedger(redis_client)
    root = await new_tree(store, ttl_s=1)
    [kid] = await store.add_nodes("t1", root.node_id, [NodeDraft("a")])
    await store.update_node("t1", kid.node_id, score=0.5)
    await store.append_event("t1", "expand", {})
    await ledger.grant("t1", {"tokens": 10})
    assert await ledger.reserve("t1", "tokens", 4) == 4

    keys = every_key(store, "t1", nodes=2)
    # Keys created after create_tree inherit its TTL instead of living forever.
    for key in keys:
        assert 0 < await redis_client.pttl(key) <= 1000, key

    await wait_until_gone(redis_client, keys, timeout_s=5)
    assert await store.get_tree("t1") is None
    with pytest.raises(TreeNotFoundError):
        await store.add_nodes("t1", None, [NodeDraft("late")])
    assert await existing_keys(redis_client, store, "t1", nodes=2) == []


async def test_finished_tree_expires_after_result_ttl(redis_client: Redis) -> None:
    store = TreeStore(redis_client)
    root = await new_tree(store)
    await store.append_event("t1", "done", {"answer": "4"})
    await store.finish_tree("t1", "done", [root.node_id], result_ttl_s=1)
    assert await store.get_tree("t1") is not None
    await wait_until_gone(redis_client, every_key(store, "t1", nodes=1), timeout_s=5)


async def wait_until_gone(client: Redis, keys: tuple[str, ...], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while await client.exists(*keys):
        assert time.monotonic() < deadline, "tree keys outlived their TTL"
        await asyncio.sleep(0.1)


async def test_events_round_trip(redis_client: Redis) -> None:
    store = TreeStore(redis_client)
    await new_tree(store)
    first = await store.append_event("t1", "expand", {"node": "n0", "k": 4})
    second = await store.append_event("t1", "score", {"node": "n1", "scores": {"arith": 1.0}})

    events = await store.read_events("t1")
    assert [e[0] for e in events] == [first, second]
    assert events[0][1]["kind"] == "expand" and events[0][1]["data"] == {"node": "n0", "k": 4}
    assert events[1][1]["data"]["scores"] == {"arith": 1.0}
    assert isinstance(events[0][1]["ts"], float)
    assert await store.read_events("t1", after_id=second) == []
    assert [e[0] for e in await store.read_events("t1", after_id=first)] == [second]
    assert len(await store.read_events("t1", count=1)) == 1

    async def publish_later() -> str:
        await asyncio.sleep(0.2)
        return await store.append_event("t1", "done", {"answer": "4"})

    publisher = asyncio.create_task(publish_later())
    waited = await store.read_events("t1", after_id=second, block_ms=5000)
    third = await publisher
    assert [(e[0], e[1]["kind"]) for e in waited] == [(third, "done")]
    assert await store.read_events("t1", after_id=third, block_ms=50) == []

    with pytest.raises(TreeNotFoundError):
        await store.append_event("missing", "expand", {})


async def test_event_stream_is_capped(redis_client: Redis) -> None:
    store = TreeStore(redis_client)
    await new_tree(store)
    total = EVENTS_MAXLEN + 600
    # Batches stay under redis-py's default pool limit of 100 connections.
    for start in range(0, total, 50):
        await asyncio.gather(
            *(store.append_event("t1", "tick", {"i": i}) for i in range(start, min(start + 50, total)))
        )
    length = await redis_client.xlen(store.keys("t1").events)
    # MAXLEN ~ trims whole radix-tree nodes (100 entries by default), so allow that slack.
    assert EVENTS_MAXLEN <= length <= EVENTS_MAXLEN + 100


@pytest.mark.parametrize("prefix", ["rc", "tenant-x:rc"])
@pytest.mark.parametrize("tree_id", ["t1", "0b7e6a1c-5f9a-4d7e-9a51-1f8e2f3c4d5e", "a:b"])
async def test_all_keys_of_a_tree_share_one_cluster_slot(prefix: str, tree_id: str) -> None:
    tree = KeySpace(prefix).tree(tree_id)
    keys = (*tree.all(), tree.lease, tree.node("n0"), tree.node("n12345"))
    assert len(set(keys)) == 9
    slots = {key_slot(key.encode()) for key in keys}
    assert slots == {key_slot(tree_id.encode())}


async def test_key_names_reject_braces() -> None:
    with pytest.raises(ValueError):
        KeySpace().tree("a{b}")
    with pytest.raises(ValueError):
        KeySpace("")


async def test_store_works_with_decoded_responses(redis_server: str) -> None:
    client = Redis.from_url(redis_server, decode_responses=True, protocol=2)
    try:
        store = TreeStore(client, KeySpace("decoded"))
        await store.create_tree(make_meta("t-dec"), ACTIVE_TTL_S)
        [root] = await store.add_nodes("t-dec", None, [NodeDraft("r")])
        await store.update_node("t-dec", root.node_id, score=0.5, scores={"v": 0.5})
        await store.append_event("t-dec", "expand", {"x": 1})
        tree = await store.get_tree("t-dec")
        assert tree is not None and tree.nodes[0].scores == {"v": 0.5}
        assert [n.node_id for n in await store.frontier("t-dec", 3)] == [root.node_id]
        assert (await store.read_events("t-dec"))[0][1]["data"] == {"x": 1}
        await store.finish_tree("t-dec", "done", [root.node_id], 60)
    finally:
        await client.delete(*every_key(store, "t-dec", nodes=1))
        await client.aclose()
