"""`reasoning-cluster eval` against the running cluster: Game of 24 at low effort with its
best-of-N baseline at an equal token budget and the model-free control of both; HumanEval's
development split graded by its hidden tests."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.local import LocalCluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def eval_command(cluster: LocalCluster, out: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cluster.cli", "eval", *flags, "--url", cluster.url, "--out", str(out)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)


def test_eval_command_writes_results_table_and_plot(cluster: LocalCluster, tmp_path: Path) -> None:
    flags = ["--dataset", "game24", "--limit", "2", "--efforts", "low", "--concurrency", "2"]
    result = eval_command(cluster, tmp_path, *flags)

    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    service = [row for row in rows if not row["control"]]
    points = [row for row in service if not row["baseline"]]
    baselines = [row for row in service if row["baseline"]]
    assert len(points) == len(baselines) == 2
    assert all(row["error"] is None and row["tree_id"] for row in rows)
    assert {row["strategy"] for row in points} == {"single_chain"}
    assert {row["strategy"] for row in baselines} == {"best_of_n"}
    assert {row["index"] for row in points} == {row["index"] for row in baselines}
    # What the service said about each answer, and the tree read back for its candidates.
    assert all(row["status"] in ("complete", "incomplete") and row["candidates"] is not None for row in rows)
    assert all(row["proposals"] >= max(row["candidates"], 1) for row in rows)

    # The baseline's cap is the point's mean reasoning tokens, rounded up, and it stays under it.
    budget = max(16, math.ceil(sum(row["reasoning_tokens"] for row in points) / len(points)))
    assert {row["max_tokens"] for row in baselines} == {budget}
    assert all(row["reasoning_tokens"] <= budget for row in baselines)

    # Every point has its model-free control: the same search and budget, on every puzzle.
    controls = [row for row in rows if row["control"]]
    mirrored = {(r["strategy"], r["baseline"], r["max_tokens"], r["index"]) for r in controls}
    assert mirrored == {(r["strategy"], r["baseline"], r["max_tokens"], r["index"]) for r in service}
    assert all(row["reasoning_tokens"] <= budget for row in controls if row["baseline"])

    table = (tmp_path / "table.md").read_text()
    assert "| low | single_chain | effort | 2 |" in table
    assert f"| low | best_of_n (baseline) | {budget} | 2 |" in table
    assert "| low | single_chain (control) | effort | 2 |" in table
    assert "Model-free control" in table
    assert table.strip() in result.stdout
    assert (tmp_path / "plot.png").read_bytes().startswith(b"\x89PNG")

    # The same command with --resume finds every item measured: it asks nothing again.
    again = eval_command(cluster, tmp_path, *flags, "--resume")
    assert "[1]" not in again.stderr and table.strip() in again.stdout
    assert [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()] == rows


def test_eval_grades_humaneval_by_its_hidden_tests(cluster: LocalCluster, tmp_path: Path) -> None:
    flags = ["--dataset", "humaneval", "--split", "dev", "--limit", "1", "--efforts", "low", "--no-baseline"]
    eval_command(cluster, tmp_path, *flags)

    (row,) = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert row["error"] is None and row["index"] % 2 == 0
    assert row["strategy"] == "single_chain" and isinstance(row["correct"], bool)
    assert row["candidates"] is not None and isinstance(row["correct_candidate"], bool)
    assert row["correct_candidate"] or not row["correct"]
    assert "| low | single_chain | effort | 1 |" in (tmp_path / "table.md").read_text()
