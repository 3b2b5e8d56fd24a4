"""Dashboards in code (Grafana's SDK): the exported JSON is in sync, well formed, links to the
explorer, and every PromQL parses."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from monitoring.dashboards import (
    DASHBOARD_DIR,
    EXPLORER_VAR,
    RATE,
    TREE_ID_VAR,
    build_dashboards,
    dashboards,
    export,
    render,
)
from monitoring.metrics import RAY_SERVE_METRICS, exported_names
from monitoring.prometheus import find_binary

pytestmark = pytest.mark.unit


def test_exported_json_is_in_sync(tmp_path: Path) -> None:
    written = export(tmp_path)
    assert sorted(p.name for p in written) == ["capacity.json", "overview.json", "reasoning.json"]
    for path in written:
        committed = DASHBOARD_DIR / path.name
        assert committed.exists(), f"run `python -m monitoring.dashboards` to create {committed}"
        assert committed.read_text() == path.read_text(), (
            f"{committed} is stale: run `python -m monitoring.dashboards` (or "
            "`reasoning-cluster dashboards export`)"
        )
    assert {p.name for p in DASHBOARD_DIR.glob("*.json")} == {p.name for p in written}


def test_dashboards_are_well_formed_grafana_json() -> None:
    built = build_dashboards()
    uids = [d["uid"] for d in built.values()]
    assert len(set(uids)) == 3 and all(len(uid) <= 40 for uid in uids)
    for name, dashboard in built.items():
        assert json.loads(render(dashboard)) == dashboard
        assert dashboard["id"] is None and dashboard["schemaVersion"] >= 36
        assert [v["name"] for v in dashboard["templating"]["list"]] == [
            "datasource",
            EXPLORER_VAR,
            TREE_ID_VAR,
        ]
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), name
        for panel in dashboard["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, panel["title"]
            if panel["type"] == "row":
                assert grid == {"x": 0, "y": grid["y"], "w": 24, "h": 1} and panel["panels"] == []
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"] and panel["description"], panel["title"]
            assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])


def test_dashboards_cover_what_the_issue_asks() -> None:
    titles = {d.uid: {p.title for p in d.every_panel} for d in dashboards()}
    assert {
        "Requests by status",
        "Time to answer",
        "Effort mix",
        "Token spend",
        "Error ratio (5xx)",
    } <= titles["rc-overview"]
    assert any("Saturation" in t for t in titles["rc-overview"])
    assert {
        "Tree size (nodes)",
        "Branch funnel",
        "Verifier outcomes",
        "Budget use",
        "Prefix-cache hit ratio",
    } <= (titles["rc-reasoning"])
    assert {"Healthy replicas", "Demand: reasoning budget in flight", "Autoscaling decisions"} <= titles[
        "rc-capacity"
    ]
    (reasoning,) = [d for d in dashboards() if d.uid == "rc-reasoning"]
    (quality,) = reasoning.rows
    assert quality.title == "Reasoning quality"
    assert [p.title for p in quality.panels] == [
        "Verified share of answers",
        "Incomplete share of answers",
        "Verifier pass rate",
        "Reasoning tokens per correct answer",
    ]


def test_the_quality_row_follows_the_reasoning_panels() -> None:
    panels = build_dashboards()["reasoning.json"]["panels"]
    (row_index,) = [i for i, p in enumerate(panels) if p["type"] == "row"]
    row, after = panels[row_index], panels[row_index + 1 :]
    assert row["title"] == "Reasoning quality" and len(after) == 4
    above = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels[:row_index])
    assert row["gridPos"]["y"] == above
    assert all(p["gridPos"]["y"] > row["gridPos"]["y"] for p in after)


def test_dashboards_link_to_the_explorer() -> None:
    for name, dashboard in build_dashboards().items():
        urls = {link["title"]: link["url"] for link in dashboard["links"]}
        assert urls["Thought-tree explorer"] == "${explorer_url}/ui/", name
        assert urls["Open tree ${tree_id}"] == "${explorer_url}/ui/#/tree/${tree_id}", name
    panels = {p["title"]: p for d in build_dashboards().values() for p in d["panels"]}
    (link,) = panels["Time to answer"]["fieldConfig"]["defaults"]["links"]
    assert link["url"] == "${explorer_url}/ui/#/?effort=${__field.labels.effort}" and link["targetBlank"]
    # Only series that carry the label link to a filtered list.
    for dashboard in dashboards():
        for panel in dashboard.every_panel:
            for label in panel.explorer_filters:
                assert all(label in t.expr or label in t.legend for t in panel.targets), panel.title


def test_panels_use_only_metrics_that_exist() -> None:
    known = exported_names() | set(RAY_SERVE_METRICS)
    for dashboard in dashboards():
        for panel in dashboard.every_panel:
            for target in panel.targets:
                for name in re.findall(r"\b(ray_[a-z0-9_]+)", target.expr):
                    assert name in known, f"{panel.title}: unknown metric {name}"


def test_every_panel_expression_parses(tmp_path: Path) -> None:
    """promtool parses each expression as a recording rule (the live check is tests/e2e)."""
    rules = [
        {"record": f"panel:{i}", "expr": target.expr.replace(RATE, "1m")}
        for i, target in enumerate(t for d in dashboards() for p in d.every_panel for t in p.targets)
    ]
    path = tmp_path / "panels.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = subprocess.run(
        [find_binary("promtool"), "check", "rules", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
