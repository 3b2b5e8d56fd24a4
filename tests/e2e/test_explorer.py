"""The thought-tree explorer (/ui/) in a real headless Chromium against the local cluster.

Trees grown by the real engine render with their winning path, a running search shows new
nodes without a reload, a tenant key cannot list or open another tenant's tree, and a
5,000-node tree (written straight into Redis through the store) opens in under 2 s.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from ray import serve
from redis.asyncio import Redis

from cluster.auth import hash_key
from cluster.local import APP_NAME, LocalCluster
from cluster.store import BudgetLedger, KeySpace, NodeDraft, ThoughtNode, TreeMeta, TreeStore
from cluster.store.tree_index import TreeIndex
from deployments.gateway import Gateway

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
# Debian's chromium, headless; its own update and sync services stay off (no network here).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TENANTS_APP = "explorer-tenants"
TENANTS_PREFIX = "/tenants"
KEYS = {"alice": "alice-key", "bob": "bob-key"}
OPS_KEY = "ops-key"
BIG_TREE_NODES = 5000
OPEN_LIMIT_S = 2.0
TTL_S = 3600


def game24_body(tokens: int) -> dict[str, Any]:
    return {
        "model": "default",
        "messages": [{"role": "user", "content": "4 9 10 13"}],
        "reasoning_effort": "medium",
        "task": "game24",
        "max_completion_tokens": tokens,
        "seed": 5,
    }


def solve(base_url: str, tree_id: str, tokens: int) -> httpx.Response:
    return httpx.post(
        f"{base_url}/v1/chat/completions",
        json=game24_body(tokens),
        headers={"X-Request-Id": tree_id},
        timeout=400,
    )


def get_tree(base_url: str, tree_id: str, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(f"{base_url}/v1/trees/{tree_id}", headers=headers, timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "install Debian's chromium (scripts/setup.sh does)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert not errors, f"the page raised: {errors}"


@pytest.fixture(scope="module")
def finished_tree(cluster: LocalCluster) -> dict[str, Any]:
    """A Game of 24 beam search grown by the real cluster, read back once it is done."""
    tree_id = f"explorer-{uuid.uuid4().hex[:12]}"
    response = solve(cluster.url, tree_id, 300)
    assert response.status_code == 200, response.text
    tree = get_tree(cluster.url, tree_id).json()
    assert tree["meta"]["status"] == "done" and len(tree["winning_path"]) >= 2
    return tree


def run_async(coroutine: Coroutine[Any, Any, Any]) -> Any:
    # Playwright's sync API owns this thread's event loop: Redis writes run on another thread.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def open_tree(page: Page, ui_url: str, tree_id: str) -> None:
    page.goto(f"{ui_url}#/tree/{tree_id}")
    page.wait_for_selector(f"body[data-tree-ready='{tree_id}']")


def node_count(page: Page) -> int:
    match = re.match(r"(\d+) nodes", page.inner_text("#tree-counts"))
    assert match, page.inner_text("#tree-counts")
    return int(match.group(1))


def test_a_finished_tree_renders_its_winning_path(
    cluster: LocalCluster, finished_tree: dict[str, Any], page: Page
) -> None:
    tree_id = finished_tree["meta"]["tree_id"]
    page.goto(f"{cluster.url}/ui/")
    expect(page.locator(f"#tree-list tr[data-tree-id='{tree_id}']")).to_be_visible()
    page.click(f"#tree-list tr[data-tree-id='{tree_id}'] a")
    page.wait_for_selector(f"body[data-tree-ready='{tree_id}']")
    expect(page.locator("#tree-status")).to_have_text("done")
    path = finished_tree["winning_path"]
    on_path = page.locator("#tree-rows .row.on-path")
    expect(on_path).to_have_count(len(path))
    assert [on_path.nth(i).get_attribute("data-node-id") for i in range(len(path))] == path
    assert node_count(page) == len(finished_tree["nodes"])
    # The winning leaf is selected: its step, scores and the tree's answer are on the page.
    leaf = next(n for n in finished_tree["nodes"] if n["node_id"] == path[-1])
    expect(page.locator("#node-detail h2")).to_contain_text(f"node {leaf['node_id']}")
    expect(page.locator("#node-detail pre.step")).to_have_text(leaf["text"])
    for verifier in leaf["scores"]:
        expect(page.locator(f"#node-detail tr[data-verifier='{verifier}']")).to_be_visible()
    expect(page.locator("#outcome [data-note='answer']")).to_have_text(
        finished_tree["meta"]["extra"]["answer"]
    )
    spent = finished_tree["budget"]["spent"]["tokens"]
    expect(page.locator("#budget [data-resource='tokens'] .legend")).to_contain_text(f"spent {spent}")
    # The session's cluster exports traces: the tree links to its trace once a viewer is set.
    trace_id = finished_tree["meta"]["extra"]["trace_id"]
    expect(page.locator("#outcome [data-note='trace_id']")).to_have_text(trace_id)
    page.click("#trace-settings summary")
    page.fill("#trace-url", "http://127.0.0.1:16686/trace/{trace_id}")
    page.press("#trace-url", "Enter")
    link = page.locator("#outcome [data-note='trace_id'] a")
    expect(link).to_have_attribute("href", f"http://127.0.0.1:16686/trace/{trace_id}")


def test_a_running_search_shows_new_nodes_without_a_reload(cluster: LocalCluster, page: Page) -> None:
    tree_id = f"explorer-live-{uuid.uuid4().hex[:8]}"
    answered: list[httpx.Response] = []
    search = threading.Thread(target=lambda: answered.append(solve(cluster.url, tree_id, 400)))
    search.start()
    try:
        deadline = time.monotonic() + 120
        while get_tree(cluster.url, tree_id).status_code == 404:
            assert time.monotonic() < deadline, "the tree was never created"
            time.sleep(0.05)
        open_tree(page, f"{cluster.url}/ui/", tree_id)
        page.evaluate("window.sameDocument = true")
        first = node_count(page)
        expect(page.locator("#tree-status")).to_have_text("running")
        # New nodes appear while the search runs; then the page sees it finish.
        page.wait_for_function(f"parseInt(document.getElementById('tree-counts').textContent) > {first}")
        expect(page.locator("#tree-status")).to_have_text("done", timeout=300_000)
    finally:
        search.join(timeout=400)
    assert answered and answered[0].status_code == 200, answered
    assert page.evaluate("window.sameDocument") is True
    final = get_tree(cluster.url, tree_id).json()
    expect(page.locator("#tree-counts")).to_contain_text(f"{len(final['nodes'])} nodes")
    expect(page.locator("#node-detail h2")).to_contain_text(f"node {final['winning_path'][-1]}")
    page.click("#fold")
    expect(page.locator("#tree-rows .row.on-path")).to_have_count(len(final["winning_path"]))
    assert first < len(final["nodes"])
    assert int(page.inner_text("#event-count")) > 0


# ---- a gateway with tenants, on the same cluster --------------------------------------------


@pytest.fixture(scope="module")
def tenants_url(cluster: LocalCluster) -> Iterator[str]:
    """A second gateway with API keys (alice, bob and an ops key) over the same Redis and workers."""
    config = cluster.config.with_overrides(
        {
            "auth": {
                "tenants": {name: {"api_key_sha256": hash_key(key)} for name, key in KEYS.items()},
                "ops": {"ops": {"api_key_sha256": hash_key(OPS_KEY)}},
            }
        }
    )
    handles = [
        serve.get_deployment_handle(name, APP_NAME)
        for name in ("Planner", "BranchGenerator", "Verifier", "JobRunner")
    ]
    # A sliver of a CPU: the session's cluster has two, and its own replicas hold most of them.
    gateway = Gateway.options(ray_actor_options={"num_cpus": 0.1}).bind(config, *handles)  # type: ignore[attr-defined]
    try:
        serve.run(gateway, name=TENANTS_APP, route_prefix=TENANTS_PREFIX)
        yield f"{cluster.url}{TENANTS_PREFIX}"
    finally:
        serve.delete(TENANTS_APP)  # also after a failed deploy: other tests' gRPC calls name no app


async def write_tree(redis_url: str, tree_id: str, owner: str, size: int) -> list[str]:
    """A finished tree of `size` nodes through the store's public methods; its winning path."""
    client = Redis.from_url(redis_url)
    try:
        keys = KeySpace()
        store, index = TreeStore(client, keys), TreeIndex(client, keys, TTL_S)
        now = time.time()
        meta = TreeMeta(
            tree_id, owner, "high", "beam_search", created_at=now, updated_at=now, question="4 9 10 13"
        )
        await store.create_tree(meta, TTL_S)
        await index.add(meta, "game24")
        await BudgetLedger(client, keys).grant(tree_id, {"tokens": 9 * size})
        rng = random.Random(size)
        [root] = await store.add_nodes(tree_id, None, [NodeDraft("4 9 10 13", prompt_tokens=40)])
        frontier: list[ThoughtNode] = [root]
        count = 1
        while count < size:
            parent = frontier.pop(0)
            drafts = [
                NodeDraft(
                    f"{rng.randint(1, 13)} + {rng.randint(1, 13)} = {rng.randint(2, 26)} (left: 4 9)",
                    completion_tokens=9,
                    status=rng.choice(["open", "open", "pruned"]),
                )
                for _ in range(min(8, size - count))
            ]
            frontier += await store.add_nodes(tree_id, parent.node_id, drafts)
            count += len(drafts)
        path = [root.node_id]
        node: ThoughtNode | None = frontier[-1]
        leaf = node
        while node is not None and node.parent_id is not None:
            path.insert(1, node.node_id)
            node = await store.get_node(tree_id, node.parent_id)
        assert leaf is not None
        await store.update_node(tree_id, leaf.node_id, score=1.0, scores={"game24_steps": 1.0})
        await store.finish_tree(tree_id, "done", path, TTL_S)
        return path
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def tenant_trees(cluster: LocalCluster, tenants_url: str) -> dict[str, str]:
    redis_url = cluster.config.redis.url
    assert redis_url is not None
    trees = {owner: f"{owner}-{uuid.uuid4().hex[:10]}" for owner in KEYS}
    for owner, tree_id in trees.items():
        run_async(write_tree(redis_url, tree_id, owner, 12))
    return trees


def use_key(page: Page, ui_url: str, key: str) -> None:
    page.goto(ui_url)
    page.fill("#api-key", key)
    page.click("#key-form button[type=submit]")
    expect(page.locator("#key-state")).to_have_text("key set for this tab")


def test_a_tenant_key_cannot_list_or_open_another_tenants_tree(
    tenants_url: str, tenant_trees: dict[str, str], page: Page
) -> None:
    ui_url = f"{tenants_url}/ui/"
    page.goto(ui_url)
    expect(page.locator("#error")).to_contain_text("API key")
    use_key(page, ui_url, KEYS["alice"])
    expect(page.locator(f"#tree-list tr[data-tree-id='{tenant_trees['alice']}']")).to_be_visible()
    expect(page.locator(f"#tree-list tr[data-tree-id='{tenant_trees['bob']}']")).to_have_count(0)
    assert set(page.locator("#tree-list tbody td:nth-child(3)").all_inner_texts()) == {"alice"}
    # Asking for bob's trees is refused; so is opening one by its id.
    page.goto(f"{ui_url}#/?tenant=bob")
    expect(page.locator("#error")).to_contain_text("lists only its own trees")
    expect(page.locator("#tree-list tbody tr")).to_have_count(0)
    page.goto(f"{ui_url}#/tree/{tenant_trees['bob']}")
    expect(page.locator("#error")).to_contain_text(f"no tree '{tenant_trees['bob']}'")
    expect(page.locator("#tree-rows .row")).to_have_count(0)
    # The key is the tab's only: a new tab (context) starts without it, and ops see both trees.
    assert page.evaluate("sessionStorage.getItem('rc-api-key')") == KEYS["alice"]
    assert page.evaluate("localStorage.length") == 0
    use_key(page, ui_url, OPS_KEY)
    for tree_id in tenant_trees.values():
        expect(page.locator(f"#tree-list tr[data-tree-id='{tree_id}']")).to_be_visible()
    assert get_tree(tenants_url, tenant_trees["bob"], KEYS["alice"]).status_code == 404


def test_a_5000_node_tree_opens_in_under_2_s(cluster: LocalCluster, tenants_url: str, page: Page) -> None:
    redis_url = cluster.config.redis.url
    assert redis_url is not None
    tree_id = f"big-{uuid.uuid4().hex[:10]}"
    path = run_async(write_tree(redis_url, tree_id, "alice", BIG_TREE_NODES))
    ui_url = f"{tenants_url}/ui/"
    use_key(page, ui_url, KEYS["alice"])
    started = time.monotonic()
    open_tree(page, ui_url, tree_id)
    elapsed = time.monotonic() - started
    print(f"a {BIG_TREE_NODES}-node tree opened in {elapsed:.2f} s")
    assert elapsed < OPEN_LIMIT_S
    assert node_count(page) == BIG_TREE_NODES
    # A finished tree opens on its winning path (its nodes open, their other children folded).
    expect(page.locator("#tree-rows .row.on-path")).to_have_count(len(path))
    # Rendered lazily: with every node open, only the rows in view are in the document, and
    # scrolling to the end draws the last ones.
    page.click("#expand-all")
    page.locator("#tree-scroll").evaluate("el => { el.scrollTop = 0; }")
    page.wait_for_timeout(200)
    rows = page.locator("#tree-rows .row")

    def shown() -> set[str | None]:
        return {rows.nth(i).get_attribute("data-node-id") for i in range(rows.count())}

    top = shown()
    assert "n0" in top and 0 < len(top) < 120
    page.locator("#tree-scroll").evaluate("el => { el.scrollTop = el.scrollHeight; }")
    page.wait_for_timeout(200)
    bottom = shown()
    assert 0 < len(bottom) < 120 and not top & bottom
