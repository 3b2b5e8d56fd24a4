"""`reasoning-cluster simulate`: every policy of a trace, compared (cluster/cli.py calls
`run_cli` by import path, so `cluster` imports nothing from `autoscale`)."""

from __future__ import annotations

import multiprocessing
import pickle
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from autoscale.sim.policies import policies_for
from autoscale.sim.pool import SimResult, simulate
from autoscale.sim.report import format_table, plot, write_summary
from autoscale.sim.trace import Trace


def run_policy(trace: Trace, name: str) -> SimResult:
    """One of the trace's policies, by name (what a worker process runs)."""
    return simulate(trace, name, policies_for(trace)[name])


def _run_pickled(trace: bytes, name: str) -> SimResult:
    return run_policy(pickle.loads(trace), name)


def compare(trace: Trace, jobs: int = 1) -> list[SimResult]:
    """Every policy of the trace, in its order; `jobs` > 1 runs them in that many processes
    (the runs are independent)."""
    names = list(policies_for(trace))
    if jobs <= 1 or len(names) <= 1:
        return [run_policy(trace, name) for name in names]
    # Pickled once here rather than once per policy (a large trace takes a while to pickle).
    payload = pickle.dumps(trace)
    # Spawned, not forked: the caller may hold threads (Ray, matplotlib) that fork would copy.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(names)), mp_context=context) as pool:
        return list(pool.map(_run_pickled, [payload] * len(names), names))


def run_cli(trace_path: str, out_dir: str | None, jobs: int = 1) -> int:
    """Print the comparison; write `<trace>.json` and `<trace>.png` to out_dir."""
    started = time.perf_counter()
    trace = Trace.load(trace_path)
    results = compare(trace, jobs)
    print(format_table(trace, results))
    for result in results:
        if result.misses_by_effort:
            print(f"{result.policy}: misses by effort {result.misses_by_effort}")
    print(
        f"simulated {len(results)} policies over {len(trace.requests)} requests in "
        f"{time.perf_counter() - started:.1f} s ({max(min(jobs, len(results)), 1)} at once)"
    )
    if out_dir is not None:
        out = Path(out_dir)
        summary = write_summary(trace, results, out / f"{trace.name}.json")
        png = plot(trace, results, out / f"{trace.name}.png")
        print(f"wrote {summary} and {png}")
    return 0
