"""Dashboards in code: the exported JSON is in sync, well formed, and every PromQL parses."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from monitoring.dashboards import DASHBOARD_DIR, RATE, build_dashboards, dashboards, export, render
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
        assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), name
        for panel in dashboard["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, panel["title"]
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"] and panel["description"], panel["title"]
            assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])


def test_dashboards_cover_what_the_issue_asks() -> None:
    titles = {d.uid: {p.title for p in d.panels} for d in dashboards()}
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


def test_panels_use_only_metrics_that_exist() -> None:
    known = exported_names() | set(RAY_SERVE_METRICS)
    for dashboard in dashboards():
        for panel in dashboard.panels:
            for target in panel.targets:
                for name in re.findall(r"\b(ray_[a-z0-9_]+)", target.expr):
                    assert name in known, f"{panel.title}: unknown metric {name}"


def test_every_panel_expression_parses(tmp_path: Path) -> None:
    """promtool parses each expression as a recording rule (the live check is tests/e2e)."""
    rules = [
        {"record": f"panel:{i}", "expr": target.expr.replace(RATE, "1m")}
        for i, target in enumerate(t for d in dashboards() for p in d.panels for t in p.targets)
    ]
    path = tmp_path / "panels.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = subprocess.run(
        [find_binary("promtool"), "check", "rules", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
