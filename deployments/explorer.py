"""The thought-tree explorer on the gateway: its static page (`/ui/`) and the tree list.

The page is plain HTML, CSS and JavaScript in `deployments/ui/` (no build step, nothing
fetched from elsewhere); it reads the gateway's own API with the key the user typed in.
`GET /v1/trees` lists the recent trees the caller may read: ops keys every tenant's, a
tenant key its own (`cluster.store.tree_index`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from cluster.api import ApiError
from cluster.auth import Caller
from cluster.store.tree import TREE_STATUSES, TreeStore
from cluster.store.tree_index import TreeFilter, TreeIndex
from cluster.tasks import task_names
from cluster.types import Effort

UI_DIR = Path(__file__).with_name("ui")
UI_PATH = "/ui"
DEFAULT_LIMIT = 50
MAX_LIMIT = 200


def mount_ui(app: FastAPI) -> None:
    """Serve the explorer's files at /ui/ (index.html for the directory)."""
    app.mount(UI_PATH, StaticFiles(directory=UI_DIR, html=True), name="ui")


async def list_trees(
    index: TreeIndex, store: TreeStore, caller: Caller, query: Mapping[str, str]
) -> dict[str, Any]:
    """`GET /v1/trees?effort=&status=&task=&tenant=&limit=&before=`: a page of recent trees."""
    wanted = TreeFilter(
        tenant=_tenant(caller, query.get("tenant") or None),
        effort=_choice(query, "effort", [e.value for e in Effort]),
        status=_choice(query, "status", sorted(TREE_STATUSES)),
        task=_choice(query, "task", task_names()),
    )
    page = await index.recent(store, wanted, _limit(query), _before(query))
    return {
        "object": "list",
        "data": [summary.to_dict() for summary in page.trees],
        "has_more": page.next_before is not None,
        "next_before": page.next_before,
    }


def _tenant(caller: Caller, asked: str | None) -> str | None:
    if caller.is_ops:
        return asked
    if asked is not None and asked != caller.tenant:
        raise ApiError(
            403,
            f"the API key of tenant {caller.tenant!r} lists only its own trees; "
            "an ops key lists every tenant's",
            type="permission_error",
            param="tenant",
        )
    return caller.tenant


def _choice(query: Mapping[str, str], name: str, allowed: list[str]) -> str | None:
    value = query.get(name) or None
    if value is not None and value not in allowed:
        options = ", ".join(repr(a) for a in allowed)
        raise ApiError(400, f"{name} {value!r} is not one of {options}", param=name)
    return value


def _limit(query: Mapping[str, str]) -> int:
    raw = query.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(400, f"limit must be a whole number from 1 to {MAX_LIMIT}, not {raw!r}", param="limit")
    return int(raw)


def _before(query: Mapping[str, str]) -> float | None:
    raw = query.get("before")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ApiError(
            400, f"before must be a creation time (the next_before of a page), not {raw!r}", param="before"
        )
    return value
