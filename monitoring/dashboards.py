"""Grafana dashboards as code with Grafana's own SDK (`grafana-foundation-sdk`).

Three dashboards (overview, reasoning with its "reasoning quality" row, capacity) are declared
below as panels of PromQL targets; `to_grafana` builds each with the SDK's builders and
`build_dashboards()` returns Grafana's dashboard JSON. `export()` writes it to
`monitoring/dashboards/*.json` (what the Helm chart ships as ConfigMaps), and
`python -m monitoring.dashboards [DIR]` does the same from a shell. Every panel queries the
datasource chosen by the `datasource` variable, so one JSON works with any Prometheus.

Links to the thought-tree explorer (the gateway's `/ui/`) use two more variables: the
dashboard link "Open tree ${tree_id}" opens the tree whose id is typed into `tree_id`, and
panels by effort link each series to the explorer's list of that effort's trees.
`explorer_url` is where the gateway is reachable from the browser.

Metric names are the exported ones (`ray_` + the catalogue name, monitoring.metrics).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as models

DASHBOARD_DIR = Path(__file__).parent / "dashboards"
TAG = "reasoning-cluster"
DATASOURCE_VAR = "datasource"
EXPLORER_VAR = "explorer_url"
TREE_ID_VAR = "tree_id"
DEFAULT_EXPLORER_URL = "http://127.0.0.1:8000"
DATASOURCE = models.DataSourceRef(type_val="prometheus", uid="${" + DATASOURCE_VAR + "}")
RATE = "$__rate_interval"
EXPLORER = "${" + EXPLORER_VAR + "}/ui/"


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    targets: tuple[Target, ...]
    unit: str = "short"
    description: str = ""
    width: int = 12
    height: int = 8
    stack: bool = False
    # Why the panel may show no data on a healthy cluster (e.g. series that only exist with
    # Serve autoscaling); None: it always has data once requests were answered.
    may_be_empty: str | None = None
    # Labels of the series (e.g. "effort") that filter the explorer's tree list it links to.
    explorer_filters: tuple[str, ...] = ()


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    rows: tuple[Row, ...] = ()
    tags: tuple[str, ...] = field(default=(TAG,))

    @property
    def every_panel(self) -> tuple[Panel, ...]:
        return self.panels + tuple(panel for row in self.rows for panel in row.panels)


def _rate(metric: str, selector: str = "") -> str:
    return f"rate({metric}{{{selector}}}[{RATE}])" if selector else f"rate({metric}[{RATE}])"


def _sum_rate(metric: str, by: str = "", selector: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} ({_rate(metric, selector)})"


def _ratio(numerator: str, denominator: str, by: str = "") -> str:
    """numerator / denominator that is 0, not empty, when the numerator has no series yet.

    A Ray counter appears only after its first increment (no 5xx yet means no 5xx series).
    """
    zero = f"({denominator} * 0)" if by else "vector(0)"
    return f"({numerator} or {zero}) / clamp_min({denominator}, 1e-9)"


def _p50_p95_by_effort(metric: str) -> tuple[Target, Target]:
    return (
        Target(_quantile(0.5, metric, "effort"), "p50 {{effort}}"),
        Target(_quantile(0.95, metric, "effort"), "p95 {{effort}}"),
    )


def _quantile(q: float, metric: str, by: str) -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) ({_rate(metric + '_bucket')}))"


REQUESTS = "ray_rc_requests_total"
ANSWER_S = "ray_rc_time_to_answer_seconds"
FIRST_S = "ray_rc_time_to_first_progress_seconds"
ANSWERED = 'status="200"'
VERDICTS = "ray_rc_verifier_verdicts_total"
ANSWERS = "ray_rc_answers_total"
ANSWER_TOKENS = "ray_rc_answer_reasoning_tokens_total"
LABELLED = 'correct!="unknown"'


def overview() -> Dashboard:
    all_requests = _sum_rate(REQUESTS)
    return Dashboard(
        "rc-overview",
        "reasoning-cluster / Overview",
        "Traffic, latency, effort mix, token spend, saturation and errors of the reasoning service.",
        (
            Panel(
                "Requests by status",
                (Target(_sum_rate(REQUESTS, "status"), "{{status}}"),),
                "reqps",
                "Chat-completion requests per second by HTTP status.",
                stack=True,
            ),
            Panel(
                "Error ratio (5xx)",
                (Target(_ratio(_sum_rate(REQUESTS, selector='status=~"5.."'), all_requests), "5xx"),),
                "percentunit",
                "Share of requests answered with a 5xx (504: deadline missed).",
            ),
            Panel(
                "Time to answer",
                _p50_p95_by_effort(ANSWER_S),
                "s",
                "Request received to answer sent, successful requests, by effort.",
                explorer_filters=("effort",),
            ),
            Panel(
                "Effort mix",
                (Target(_sum_rate(REQUESTS, "effort", 'effort!="unknown"'), "{{effort}}"),),
                "reqps",
                "Requests per second by reasoning effort.",
                stack=True,
                explorer_filters=("effort",),
            ),
            Panel(
                "Token spend",
                (
                    Target(_sum_rate("ray_rc_reasoning_tokens_total", "effort"), "reasoning {{effort}}"),
                    Target(_sum_rate("ray_rc_prompt_tokens_total"), "prompt"),
                ),
                "short",
                "Reasoning tokens per second by effort (engine counts), and prompt tokens per second.",
            ),
            Panel(
                "Engine throughput",
                (Target(_sum_rate("ray_rc_engine_generated_tokens_total"), "generated tokens/s"),),
                "short",
                "Tokens per second generated by all branch-generator engines.",
            ),
            Panel(
                "Saturation: ongoing and queued requests",
                (
                    Target(
                        "sum by (deployment) (ray_serve_replica_processing_queries)", "ongoing {{deployment}}"
                    ),
                    Target(
                        "sum by (deployment) (ray_serve_deployment_queued_queries)", "queued {{deployment}}"
                    ),
                ),
                "short",
                "Requests each deployment is processing, and requests waiting for a replica (Ray Serve).",
            ),
            Panel(
                "Requests in flight",
                (Target("sum by (effort) (ray_rc_requests_in_flight)", "{{effort}}"),),
                "short",
                "Chat completions being answered, by effort.",
                stack=True,
            ),
            Panel(
                "Errors by status",
                (Target(_sum_rate(REQUESTS, "status", 'status!="200"'), "{{status}}"),),
                "reqps",
                "Failed requests per second by HTTP status (4xx: the caller's; 5xx and 504: ours).",
            ),
            Panel(
                "Redis latency p99 and errors",
                (
                    Target(
                        _quantile(0.99, "ray_rc_redis_operation_duration_seconds", "operation"),
                        "p99 {{operation}}",
                    ),
                    Target(
                        f"{_sum_rate('ray_rc_redis_errors_total', 'kind')} or vector(0)",
                        "errors/s {{kind}}",
                    ),
                ),
                "s",
                "Redis command latency by command (EVALSHA = Lua scripts, XREAD blocks up to 1 s), "
                "and failed commands per second.",
            ),
        ),
    )


def reasoning() -> Dashboard:
    return Dashboard(
        "rc-reasoning",
        "reasoning-cluster / Reasoning",
        "Thought trees, the branch funnel, verifier outcomes, budget use and the prefix cache.",
        (
            Panel(
                "Tree size (nodes)",
                _p50_p95_by_effort("ray_rc_tree_nodes"),
                "short",
                "Nodes per finished tree (root included), by effort.",
                explorer_filters=("effort",),
            ),
            Panel(
                "Tree depth",
                (Target(_quantile(0.95, "ray_rc_tree_depth", "effort"), "p95 {{effort}}"),),
                "short",
                "Depth of finished trees, by effort.",
            ),
            Panel(
                "Branch funnel",
                (
                    Target(_sum_rate("ray_rc_branches_generated_total"), "generated"),
                    Target(f"{_sum_rate('ray_rc_branches_verified_total')} or vector(0)", "verified"),
                    Target(f"{_sum_rate('ray_rc_branches_pruned_total')} or vector(0)", "pruned"),
                ),
                "short",
                "Chains per second: grown, scored by verifiers, and discarded when a search finished.",
            ),
            Panel(
                "Searches by outcome",
                (
                    Target(
                        _sum_rate("ray_rc_searches_total", "outcome, strategy"), "{{strategy}} {{outcome}}"
                    ),
                ),
                "short",
                "Searches per second by strategy and outcome (done, failed, deadline, cancelled).",
            ),
            Panel(
                "Verifier outcomes",
                (Target(_sum_rate(VERDICTS, "verifier, outcome"), "{{verifier}} {{outcome}}"),),
                "short",
                "Verdicts per second by verifier and outcome (abstain: the verifier could not judge).",
                stack=True,
            ),
            Panel(
                "Budget use",
                (
                    Target(
                        _ratio(
                            _sum_rate("ray_rc_budget_spent_tokens_total", "effort"),
                            _sum_rate("ray_rc_budget_granted_tokens_total", "effort"),
                            by="effort",
                        ),
                        "spent/granted {{effort}}",
                    ),
                    Target(
                        _quantile(0.95, "ray_rc_budget_spent_ratio", "effort"), "p95 per request {{effort}}"
                    ),
                ),
                "percentunit",
                "Reasoning tokens spent per token granted (tree ledgers). Above 100% cannot happen.",
            ),
            Panel(
                "Prefix-cache hit ratio",
                (
                    Target(
                        _ratio(
                            _sum_rate("ray_rc_cached_tokens_total", "effort"),
                            _sum_rate("ray_rc_prompt_tokens_total", "effort"),
                            by="effort",
                        ),
                        "{{effort}}",
                    ),
                ),
                "percentunit",
                "Prompt tokens served from the engine's prefix cache (whole KV blocks) per prompt token.",
            ),
            Panel(
                "Time to first progress",
                _p50_p95_by_effort(FIRST_S),
                "s",
                "Planner start to the tree's first chains (its first progress event), by effort.",
            ),
            Panel(
                "Reasoning tokens per request",
                (
                    Target(
                        f"{_sum_rate('ray_rc_reasoning_tokens_total', 'effort')} / "
                        f"clamp_min({_sum_rate(REQUESTS, 'effort', ANSWERED)}, 1e-9)",
                        "{{effort}}",
                    ),
                ),
                "short",
                "Mean reasoning tokens of an answered request, by effort.",
                explorer_filters=("effort",),
            ),
        ),
        rows=(Row("Reasoning quality", quality_panels()),),
    )


def quality_panels() -> tuple[Panel, ...]:
    """Whether the answers are any good: verified, complete, passing, and what a right one costs."""
    answers = _sum_rate(ANSWERS, "effort")
    labelled = _sum_rate(ANSWERS, "effort", LABELLED)
    correct = _sum_rate(ANSWERS, "effort", 'correct="true"')
    return (
        Panel(
            "Verified share of answers",
            (
                Target(
                    _ratio(_sum_rate(ANSWERS, "effort", 'verified="true"'), answers, "effort"), "{{effort}}"
                ),
            ),
            "percentunit",
            "Answers a verifier that proves answers accepted, per answer, by effort.",
            explorer_filters=("effort",),
        ),
        Panel(
            "Incomplete share of answers",
            (
                Target(
                    _ratio(_sum_rate(ANSWERS, "effort", 'status="incomplete"'), answers, "effort"),
                    "{{effort}}",
                ),
            ),
            "percentunit",
            "Answers whose winning chain did not finish (it ran out of tokens), per answer, by effort.",
            explorer_filters=("effort",),
        ),
        Panel(
            "Verifier pass rate",
            (
                Target(
                    _ratio(
                        _sum_rate(VERDICTS, "verifier", 'outcome="pass"'),
                        _sum_rate(VERDICTS, "verifier", 'outcome=~"pass|fail"'),
                        by="verifier",
                    ),
                    "{{verifier}}",
                ),
            ),
            "percentunit",
            "Passed / judged verdicts per verifier.",
        ),
        Panel(
            "Reasoning tokens per correct answer",
            (
                Target(
                    f"{_sum_rate(ANSWER_TOKENS, 'effort', LABELLED)} / clamp_min({correct}, 1e-9)",
                    "per correct {{effort}}",
                ),
                Target(_ratio(correct, labelled, "effort"), "accuracy {{effort}}"),
            ),
            "short",
            "Answers with an evaluation label (a Game of 24 puzzle, a reference answer): reasoning "
            "tokens spent on them per correct one, and the share that is correct.",
            may_be_empty="only answers with an evaluation label (Game of 24, a reference answer) count",
            explorer_filters=("effort",),
        ),
    )


def capacity() -> Dashboard:
    healthy = "ray_serve_deployment_replica_healthy"
    return Dashboard(
        "rc-capacity",
        "reasoning-cluster / Capacity",
        "Demand (reasoning budgets in flight) against replicas, per deployment.",
        (
            Panel(
                "Healthy replicas",
                (Target(f"sum by (deployment) ({healthy})", "{{deployment}}"),),
                "short",
                "Healthy replicas per deployment (Ray Serve).",
            ),
            Panel(
                "Target replicas",
                (Target("max by (deployment) (ray_serve_autoscaling_target_replicas)", "{{deployment}}"),),
                "short",
                "Replicas Ray Serve is steering each deployment to.",
            ),
            Panel(
                "Demand: reasoning budget in flight",
                (Target("sum by (effort) (ray_rc_budget_in_flight_tokens)", "{{effort}}"),),
                "short",
                "Reasoning tokens granted to requests still running, by effort.",
                stack=True,
            ),
            Panel(
                "Demand per branch-generator replica",
                (
                    Target(
                        "sum(ray_rc_budget_in_flight_tokens) / "
                        f'clamp_min(sum({healthy}{{deployment="BranchGenerator"}}), 1)',
                        "budget tokens in flight / replica",
                    ),
                ),
                "short",
                "Reasoning budget in flight per healthy engine replica: what the generators must deliver.",
            ),
            Panel(
                "Ongoing requests per replica",
                (
                    Target(
                        "sum by (deployment) (ray_serve_replica_processing_queries) / "
                        f"clamp_min(sum by (deployment) ({healthy}), 1)",
                        "{{deployment}}",
                    ),
                ),
                "short",
                "Requests each replica is processing, averaged per deployment (Ray Serve).",
            ),
            Panel(
                "Queued requests",
                (Target("sum by (deployment) (ray_serve_deployment_queued_queries)", "{{deployment}}"),),
                "short",
                "Requests waiting for a replica of each deployment (Ray Serve routers).",
            ),
            Panel(
                "Engine throughput per replica",
                (Target(_sum_rate("ray_rc_engine_generated_tokens_total", "WorkerId"), "{{WorkerId}}"),),
                "short",
                "Generated tokens per second of each branch-generator replica (Ray worker).",
            ),
            Panel(
                "Engine calls in flight",
                (Target("sum(ray_rc_engine_ongoing_requests)", "engine calls"),),
                "short",
                "Batched engine calls running on all branch-generators.",
            ),
            Panel(
                "Autoscaling decisions",
                (
                    Target(
                        "max by (deployment) (ray_serve_autoscaling_desired_replicas)",
                        "desired {{deployment}}",
                    ),
                    Target(
                        "max by (deployment) (ray_serve_autoscaling_target_replicas)", "target {{deployment}}"
                    ),
                ),
                "short",
                "The autoscaling policy's raw decision against the bounded target (only autoscaled "
                "deployments have a decision).",
                may_be_empty="only deployments under Serve autoscaling have a decision",
            ),
        ),
    )


def dashboards() -> tuple[Dashboard, ...]:
    return (overview(), reasoning(), capacity())


# ---- Grafana JSON, built with the SDK ---------------------------------------------------


def _explorer_link(labels: Sequence[str]) -> dashboard_builders.DashboardLink:
    query = "&".join(f"{label}=${{__field.labels.{label}}}" for label in labels)
    return (
        dashboard_builders.DashboardLink("Trees of this series in the explorer")
        .url(f"{EXPLORER}#/?{query}")
        .target_blank(True)
    )


def _panel(panel: Panel, panel_id: int) -> timeseries.Panel:
    built = (
        timeseries.Panel()
        .id(panel_id)
        .title(panel.title)
        .description(panel.description)
        .datasource(DATASOURCE)
        .unit(panel.unit)
        .span(panel.width)
        .height(panel.height)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .draw_style(common.GraphDrawStyle.LINE)
        .show_points(common.VisibilityMode.NEVER)
        .fill_opacity(20 if panel.stack else 0)
        .stacking(
            common_builders.StackingConfig()
            .mode(common.StackingMode.NORMAL if panel.stack else common.StackingMode.NONE)
            .group("A")
        )
    )
    for i, target in enumerate(panel.targets):
        built.with_target(
            prometheus.Dataquery()
            .ref_id(chr(ord("A") + i))
            .datasource(DATASOURCE)
            .expr(target.expr)
            .legend_format(target.legend or "__auto")
            .range()
        )
    if panel.explorer_filters:
        built.data_links([_explorer_link(panel.explorer_filters)])
    return built


def _variables() -> list[Any]:
    return [
        dashboard_builders.DatasourceVariable(DATASOURCE_VAR).label("Prometheus").type("prometheus"),
        dashboard_builders.TextBoxVariable(EXPLORER_VAR)
        .label("Explorer URL")
        .description("Where the gateway (its /ui/ explorer) is reachable from this browser.")
        .default_value(DEFAULT_EXPLORER_URL),
        dashboard_builders.TextBoxVariable(TREE_ID_VAR)
        .label("Tree id")
        .description("A tree id (a response's reasoning.tree_id) to open in the explorer."),
    ]


def _links() -> list[Any]:
    return [
        dashboard_builders.DashboardLink("Thought-tree explorer")
        .type(models.DashboardLinkType.LINK)
        .url(EXPLORER)
        .target_blank(True),
        dashboard_builders.DashboardLink("Open tree ${" + TREE_ID_VAR + "}")
        .type(models.DashboardLinkType.LINK)
        .url(EXPLORER + "#/tree/${" + TREE_ID_VAR + "}")
        .target_blank(True),
    ]


def to_grafana(dashboard: Dashboard) -> dict[str, Any]:
    built = (
        dashboard_builders.Dashboard(dashboard.title)
        .uid(dashboard.uid)
        .description(dashboard.description)
        .tags(list(dashboard.tags))
        .timezone("browser")
        .editable()
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .refresh("30s")
        .time("now-1h", "now")
        .version(1)
        .variables(_variables())
        .links(_links())
    )
    panel_ids = iter(range(1, 1000))
    for panel in dashboard.panels:
        built.with_panel(_panel(panel, next(panel_ids)))
    for row in dashboard.rows:
        # An open row: its panels follow it at the top level (a collapsed row would nest them).
        built.with_row(dashboard_builders.Row(row.title).id(next(panel_ids)))
        for panel in row.panels:
            built.with_panel(_panel(panel, next(panel_ids)))
    grafana: dict[str, Any] = json.loads(json.dumps(built.build(), cls=JSONEncoder))
    # A new dashboard is saved with a null id (Grafana assigns one); the SDK leaves it out.
    return {"id": None, **grafana}


def build_dashboards() -> dict[str, dict[str, Any]]:
    """File name -> Grafana dashboard JSON."""
    return {f"{d.uid.removeprefix('rc-')}.json": to_grafana(d) for d in dashboards()}


def render(dashboard: dict[str, Any]) -> str:
    return json.dumps(dashboard, indent=2, sort_keys=True) + "\n"


def export(directory: Path = DASHBOARD_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, dashboard in build_dashboards().items():
        path = directory / name
        path.write_text(render(dashboard))
        written.append(path)
    return written


def export_command(args: argparse.Namespace) -> int:
    """`reasoning-cluster dashboards export [DIR]`."""
    for path in export(Path(args.directory) if args.directory else DASHBOARD_DIR):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for path in export(Path(args[0]) if args else DASHBOARD_DIR):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
