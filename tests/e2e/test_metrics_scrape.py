"""A real Prometheus (Debian's) scrapes the local cluster: every dashboard panel and alert rule
evaluates, and the panels show data after a little traffic."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from openai import OpenAI

from cluster.local import LocalCluster
from monitoring.dashboards import RATE, dashboards
from monitoring.metrics import exported_names
from monitoring.prometheus import RULES_FILE, PrometheusServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

QUESTION = "What is 12 + 30?"
POLL_S = 120.0
# Series that exist only when something goes wrong or Serve autoscaling is on.
ONLY_ON_FAILURE = {"ray_rc_redis_errors_total"}
ONLY_WITH_AUTOSCALING = {"ray_serve_autoscaling_desired_replicas"}


def _promql(expr: str) -> str:
    return expr.replace(RATE, "1m")


@pytest.fixture(scope="module")
def prometheus(cluster: LocalCluster) -> Iterator[PrometheusServer]:
    with PrometheusServer([cluster.metrics_url], scrape_interval="2s") as server:
        yield server


@pytest.fixture(scope="module")
def traffic(prometheus: PrometheusServer, openai_client: OpenAI, cluster: LocalCluster) -> list[Any]:
    """Two low and one medium answer, and one rejected request (an unknown effort)."""
    answers = [
        openai_client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": QUESTION}],
            reasoning_effort=effort,  # type: ignore[arg-type]
            seed=seed,
        )
        for effort, seed in (("low", 1), ("low", 2), ("medium", 3))
    ]
    bad = httpx.post(
        f"{cluster.url}/v1/chat/completions",
        json={
            "model": "default",
            "messages": [{"role": "user", "content": "hi"}],
            "reasoning_effort": "ultra",
        },
        timeout=30,
    )
    assert bad.status_code == 400
    return answers


def _poll(prometheus: PrometheusServer, exprs: dict[str, str]) -> dict[str, str]:
    """Query until every expression returns data; what still has none (or fails) at the end."""
    missing = dict(exprs)
    deadline = time.monotonic() + POLL_S
    while missing and time.monotonic() < deadline:
        for name, expr in list(missing.items()):
            if prometheus.query(expr):
                del missing[name]
        if missing:
            time.sleep(2)
    return missing


def test_prometheus_scrapes_the_cluster(prometheus: PrometheusServer, traffic: list[Any]) -> None:
    missing = _poll(prometheus, {"up": 'up{job="reasoning-cluster"} == 1'})
    assert not missing, f"the Ray metrics endpoint was never scraped: {prometheus.targets_up()}"


def test_every_dashboard_panel_returns_data(prometheus: PrometheusServer, traffic: list[Any]) -> None:
    wanted: dict[str, str] = {}
    optional: dict[str, str] = {}
    for dashboard in dashboards():
        for panel in dashboard.every_panel:
            for i, target in enumerate(panel.targets):
                key = f"{dashboard.uid} / {panel.title} / {chr(ord('A') + i)}"
                # Every expression must parse and evaluate (query raises otherwise).
                prometheus.query(_promql(target.expr))
                (optional if panel.may_be_empty else wanted)[key] = _promql(target.expr)
    missing = _poll(prometheus, wanted)
    assert not missing, f"panels without data after traffic: {missing}"


def test_every_alert_rule_evaluates_on_live_series(prometheus: PrometheusServer, traffic: list[Any]) -> None:
    rules = [rule for group in yaml.safe_load(RULES_FILE.read_text())["groups"] for rule in group["rules"]]
    inputs: dict[str, str] = {}
    for rule in rules:
        prometheus.query(rule["expr"])  # parses and evaluates (raises otherwise)
        for name in set(re.findall(r"\b(ray_[a-z0-9_]+)", rule["expr"])):
            if name not in ONLY_ON_FAILURE | ONLY_WITH_AUTOSCALING:
                inputs[f"{rule['alert']}: {name}"] = f"count({name})"
    missing = _poll(prometheus, inputs)
    assert not missing, f"alert inputs with no series: {missing}"


def test_counters_match_the_answers(prometheus: PrometheusServer, traffic: list[Any]) -> None:
    def total(expr: str) -> float:
        result = prometheus.query(expr)
        return float(result[0]["value"][1]) if result else 0.0

    low_tokens = sum(a.usage.completion_tokens for a in traffic[:2])
    wanted = {
        "low answers": ('sum(ray_rc_requests_total{effort="low",status="200"})', 2.0),
        "medium answers": ('sum(ray_rc_requests_total{effort="medium",status="200"})', 1.0),
        "unknown effort rejected": ('sum(ray_rc_requests_total{effort="unknown",status="400"})', 1.0),
        "low reasoning tokens": ('sum(ray_rc_reasoning_tokens_total{effort="low"})', float(low_tokens)),
        "engine tokens": ("sum(ray_rc_engine_generated_tokens_total)", float(low_tokens)),
        "medium chains": ('sum(ray_rc_branches_generated_total{effort="medium"})', 1.0),
    }
    # The session's other tests share this cluster: counters are at least what this test sent.
    deadline = time.monotonic() + POLL_S
    short = dict(wanted)
    while short and time.monotonic() < deadline:
        short = {k: (e, v) for k, (e, v) in short.items() if total(e) < v}
        if short:
            time.sleep(2)
    assert not short, {k: (e, v, total(e)) for k, (e, v) in short.items()}
    overspent = total(
        "sum(ray_rc_budget_spent_ratio_count) - sum(ray_rc_budget_spent_ratio_bucket{le='1.0'})"
    )
    assert overspent == 0


def test_scraped_names_are_the_catalogue(prometheus: PrometheusServer, traffic: list[Any]) -> None:
    names = set(prometheus.api("label/__name__/values"))
    ours = {n for n in names if n.startswith("ray_rc_")}
    assert ours <= exported_names(), f"exported but not in the catalogue: {ours - exported_names()}"
