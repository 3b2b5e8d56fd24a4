"""`reasoning-cluster simulate`: every policy of a trace, compared (cluster/cli.py calls
`run_cli` by import path, so `cluster` imports nothing from `autoscale`)."""

from __future__ import annotations

import time
from pathlib import Path

from autoscale.sim.policies import policies_for
from autoscale.sim.pool import SimResult, simulate
from autoscale.sim.report import format_table, plot, write_summary
from autoscale.sim.trace import Trace


def compare(trace: Trace) -> list[SimResult]:
    return [simulate(trace, name, policy) for name, policy in policies_for(trace).items()]


def run_cli(trace_path: str, out_dir: str | None) -> int:
    """Print the comparison; write `<trace>.json` and `<trace>.png` to out_dir."""
    started = time.perf_counter()
    trace = Trace.load(trace_path)
    results = compare(trace)
    print(format_table(trace, results))
    for result in results:
        if result.misses_by_effort:
            print(f"{result.policy}: misses by effort {result.misses_by_effort}")
    print(
        f"simulated {len(results)} policies over {len(trace.requests)} requests in "
        f"{time.perf_counter() - started:.1f} s"
    )
    if out_dir is not None:
        out = Path(out_dir)
        summary = write_summary(trace, results, out / f"{trace.name}.json")
        png = plot(trace, results, out / f"{trace.name}.png")
        print(f"wrote {summary} and {png}")
    return 0
