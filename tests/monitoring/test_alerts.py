"""The alert rules: `promtool check rules` and the `promtool test rules` unit tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from monitoring.metrics import RAY_SERVE_METRICS, exported_names
from monitoring.prometheus import RULES_FILE, find_binary

pytestmark = pytest.mark.unit

TESTS_DIR = RULES_FILE.parent / "tests"
ALERTS = {
    "ReasoningHighErrorRate",
    "ReasoningDeadlineMisses",
    "ReasoningBudgetOverspend",
    "ReasoningRedisUnavailable",
    "ReasoningReplicasPinnedAtMax",
}


def _promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [find_binary("promtool"), *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def _rules() -> list[dict[str, object]]:
    return [rule for group in yaml.safe_load(RULES_FILE.read_text())["groups"] for rule in group["rules"]]


def test_promtool_check_rules() -> None:
    result = _promtool("check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests() -> None:
    files = sorted(TESTS_DIR.glob("*.yaml"))
    assert files
    result = _promtool("test", "rules", *(f.name for f in files), cwd=TESTS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_unit_tested_and_documented() -> None:
    tested = " ".join(f.read_text() for f in TESTS_DIR.glob("*.yaml"))
    assert {rule["alert"] for rule in _rules()} == ALERTS
    for rule in _rules():
        assert f"alertname: {rule['alert']}" in tested, rule["alert"]
        labels, annotations = rule["labels"], rule["annotations"]
        assert isinstance(labels, dict) and labels["severity"] in ("warning", "critical")
        assert isinstance(annotations, dict) and annotations["summary"] and annotations["description"]


def test_rules_use_only_metrics_that_exist() -> None:
    import re

    known = exported_names() | set(RAY_SERVE_METRICS)
    for rule in _rules():
        for name in re.findall(r"\b(ray_[a-z0-9_]+)", str(rule["expr"])):
            assert name in known, f"{rule['alert']} uses unknown metric {name}"
