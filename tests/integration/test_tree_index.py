"""The tree index and `GET /v1/trees` on a real redis-server: who sees what, filters, pages, TTLs."""

from __future__ import annotations

import time

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from cluster.api import ApiError
from cluster.auth import Caller
from cluster.store import KeySpace, TreeMeta, TreeStore
from cluster.store.tree_index import TreeFilter, TreeIndex
from cluster.types import Effort
from deployments.explorer import list_trees

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

TTL_S = 3600
OPS = Caller("ops", Effort.HIGH, is_ops=True)
ALICE = Caller("alice", Effort.HIGH)
BOB = Caller("bob", Effort.MEDIUM)


async def _tree(
    store: TreeStore, index: TreeIndex, tree_id: str, owner: str, effort: str, task: str, created: float
) -> None:
    meta = TreeMeta(tree_id, owner, effort, "beam_search", created_at=created, updated_at=created)
    await store.create_tree(meta, active_ttl_s=TTL_S)
    await index.add(meta, task)


@pytest.fixture
async def trees(redis_client: Redis) -> tuple[TreeStore, TreeIndex]:
    """Five trees, one second apart, oldest first: alice a1..a3, bob b1..b2."""
    keys = KeySpace("rc")
    store, index = TreeStore(redis_client, keys), TreeIndex(redis_client, keys, TTL_S)
    now = time.time() - 10
    rows = [
        ("a1", "alice", "low", "general"),
        ("b1", "bob", "medium", "math"),
        ("a2", "alice", "high", "game24"),
        ("b2", "bob", "high", "game24"),
        ("a3", "alice", "medium", "math"),
    ]
    for i, (tree_id, owner, effort, task) in enumerate(rows):
        await _tree(store, index, tree_id, owner, effort, task, now + i)
    await store.finish_tree("a2", "done", [], result_ttl_s=TTL_S)
    return store, index


def _ids(body: dict[str, object]) -> list[str]:
    return [row["tree_id"] for row in body["data"]]  # type: ignore[attr-defined, index]


async def test_ops_see_every_tree_and_tenants_their_own(trees: tuple[TreeStore, TreeIndex]) -> None:
    store, index = trees
    assert _ids(await list_trees(index, store, OPS, {})) == ["a3", "b2", "a2", "b1", "a1"]
    assert _ids(await list_trees(index, store, ALICE, {})) == ["a3", "a2", "a1"]
    assert _ids(await list_trees(index, store, BOB, {})) == ["b2", "b1"]
    assert _ids(await list_trees(index, store, OPS, {"tenant": "bob"})) == ["b2", "b1"]
    assert _ids(await list_trees(index, store, ALICE, {"tenant": "alice"})) == ["a3", "a2", "a1"]


async def test_a_tenant_cannot_list_another_tenants_trees(trees: tuple[TreeStore, TreeIndex]) -> None:
    store, index = trees
    with pytest.raises(ApiError) as raised:
        await list_trees(index, store, ALICE, {"tenant": "bob"})
    assert raised.value.status == 403 and raised.value.param == "tenant"
    assert "alice" in raised.value.message and "bob" not in _ids(await list_trees(index, store, ALICE, {}))


async def test_rows_carry_meta_and_task(trees: tuple[TreeStore, TreeIndex]) -> None:
    store, index = trees
    body = await list_trees(index, store, OPS, {"tenant": "alice", "limit": "1"})
    (row,) = body["data"]
    assert row["tree_id"] == "a3" and row["owner"] == "alice" and row["effort"] == "medium"
    assert row["task"] == "math" and row["status"] == "running" and row["strategy"] == "beam_search"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"effort": "high"}, ["b2", "a2"]),
        ({"task": "math"}, ["a3", "b1"]),
        ({"status": "done"}, ["a2"]),
        ({"status": "running", "effort": "medium"}, ["a3", "b1"]),
        ({"task": "game24", "tenant": "bob"}, ["b2"]),
        ({"effort": "low", "task": "math"}, []),
    ],
)
async def test_filters(
    trees: tuple[TreeStore, TreeIndex], query: dict[str, str], expected: list[str]
) -> None:
    store, index = trees
    assert _ids(await list_trees(index, store, OPS, query)) == expected


async def test_pages_go_from_newest_to_oldest(trees: tuple[TreeStore, TreeIndex]) -> None:
    store, index = trees
    seen: list[str] = []
    query = {"limit": "2"}
    while True:
        body = await list_trees(index, store, OPS, query)
        seen += _ids(body)
        if not body["has_more"]:
            break
        query = {"limit": "2", "before": repr(body["next_before"])}
    assert seen == ["a3", "b2", "a2", "b1", "a1"]


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"effort": "ultra"}, "effort"),
        ({"status": "lost"}, "status"),
        ({"task": "poetry"}, "task"),
        ({"limit": "0"}, "limit"),
        ({"limit": "500"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"before": "yesterday"}, "before"),
        ({"before": "nan"}, "before"),
    ],
)
async def test_bad_parameters_are_400s(
    trees: tuple[TreeStore, TreeIndex], query: dict[str, str], param: str
) -> None:
    store, index = trees
    with pytest.raises(ApiError) as raised:
        await list_trees(index, store, OPS, query)
    assert raised.value.status == 400 and raised.value.param == param


async def test_expired_trees_are_skipped_and_old_ids_trimmed(
    redis_client: Redis, trees: tuple[TreeStore, TreeIndex]
) -> None:
    store, index = trees
    # b2's tree expired (its keys are gone) while its index entry still lives.
    await redis_client.delete(*store.keys("b2").all())
    assert _ids(await list_trees(index, store, OPS, {})) == ["a3", "a2", "b1", "a1"]
    # A tree created longer than the TTL ago is trimmed from the sets by the next write.
    old = time.time() - TTL_S - 60
    await _tree(store, index, "old", "bob", "low", "general", old)
    await _tree(store, index, "new", "bob", "low", "general", time.time())
    assert "old" not in _ids(await list_trees(index, store, OPS, {}))
    assert await redis_client.zscore("rc:{tree-index}:all", "old") is None
    assert await redis_client.zscore("rc:{tree-index}:tenant:bob", "old") is None
    assert 0 < await redis_client.ttl("rc:{tree-index}:entry:new") <= TTL_S


async def test_index_keys_share_one_cluster_slot(
    trees: tuple[TreeStore, TreeIndex], redis_client: Redis
) -> None:
    keys = [k async for k in redis_client.scan_iter("rc:{tree-index}:*")]
    assert len(keys) == 1 + 2 + 5  # all, two tenants, five entries
    assert len({key_slot(k) for k in keys}) == 1


async def test_a_filter_that_matches_nothing_stops_at_the_scan_limit(redis_client: Redis) -> None:
    keys = KeySpace("rc")
    store, index = TreeStore(redis_client, keys), TreeIndex(redis_client, keys, TTL_S)
    now = time.time() - 1000
    for i in range(450):
        await _tree(store, index, f"t{i:04d}", "alice", "low", "general", now + i)
    page = await index.recent(store, TreeFilter(effort="high"), limit=10)
    assert page.trees == [] and page.next_before is None
    page = await index.recent(store, TreeFilter(effort="low"), limit=300)
    assert [s.meta.tree_id for s in page.trees][:2] == ["t0449", "t0448"] and len(page.trees) == 300
    assert page.next_before == pytest.approx(now + 150)
