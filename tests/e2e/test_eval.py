"""`reasoning-cluster eval` against the running cluster: Game of 24 at low effort and its
best-of-N baseline at an equal token budget."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.local import LocalCluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_eval_command_writes_results_table_and_plot(cluster: LocalCluster, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "cluster.cli", "eval", "--dataset", "game24", "--limit", "2"]
    command += ["--efforts", "low", "--concurrency", "2", "--url", cluster.url, "--out", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)

    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    points = [row for row in rows if not row["baseline"]]
    baselines = [row for row in rows if row["baseline"]]
    assert len(points) == len(baselines) == 2
    assert all(row["error"] is None and row["tree_id"] for row in rows)
    assert {row["strategy"] for row in points} == {"single_chain"}
    assert {row["strategy"] for row in baselines} == {"best_of_n"}
    assert {row["index"] for row in points} == {row["index"] for row in baselines}

    # The baseline's cap is the point's mean reasoning tokens, rounded up, and it stays under it.
    budget = max(16, math.ceil(sum(row["reasoning_tokens"] for row in points) / len(points)))
    assert {row["max_tokens"] for row in baselines} == {budget}
    assert all(row["reasoning_tokens"] <= budget for row in baselines)

    table = (tmp_path / "table.md").read_text()
    assert "| low | single_chain | effort | 2 |" in table
    assert f"| low | best_of_n (baseline) | {budget} | 2 |" in table
    assert table.strip() in result.stdout
    assert (tmp_path / "plot.png").read_bytes().startswith(b"\x89PNG")
