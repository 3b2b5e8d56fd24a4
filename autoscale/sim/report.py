"""The comparison as a Markdown table, a JSON summary and a replica-timeline plot."""

from __future__ import annotations

import json
from pathlib import Path

from autoscale.sim.pool import SimResult
from autoscale.sim.trace import Trace


def format_table(trace: Trace, results: list[SimResult]) -> str:
    header = (
        "| policy | requests | deadline misses | miss rate | p50 s | p95 s | GPU-hours | peak replicas |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    lines = [f"trace {trace.name}: {trace.description}", "", header]
    for result in results:
        row = result.row()
        lines.append(
            f"| {row['policy']} | {row['requests']} | {row['deadline_misses']} | {row['miss_rate']:.2%} | "
            f"{row['p50_s']:.1f} | {row['p95_s']:.1f} | {row['gpu_hours']:.2f} | {row['peak_replicas']} |"
        )
    return "\n".join(lines)


def write_summary(trace: Trace, results: list[SimResult], path: Path) -> Path:
    summary = {"trace": trace.name, "results": [r.row() for r in results]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


def plot(trace: Trace, results: list[SimResult], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    for result in results:
        times = [p.t / 60 for p in result.timeline]
        top.step(
            times,
            [p.ready + p.starting for p in result.timeline],
            where="post",
            label=f"{result.policy} ({result.gpu_hours:.1f} GPU-h, {result.misses} misses)",
        )
        bottom.step(times, [p.queued for p in result.timeline], where="post", label=result.policy)
    arrivals: dict[int, int] = {}
    for req in trace.requests:
        if req.effort == "high":
            arrivals[int(req.arrival // 60)] = arrivals.get(int(req.arrival // 60), 0) + 1
    if arrivals:
        twin = top.twinx()
        twin.bar(list(arrivals), list(arrivals.values()), width=1.0, alpha=0.15, color="grey", align="edge")
        twin.set_ylabel("high-effort arrivals / min")
    top.set_ylabel("GPU replicas (ready + starting)")
    top.set_title(f"{trace.name}: {trace.description}")
    top.legend(loc="upper left", fontsize=8)
    bottom.set_ylabel("requests waiting")
    bottom.set_xlabel("minutes")
    bottom.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
