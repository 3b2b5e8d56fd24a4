"""`reasoning-cluster eval` against the running cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cluster.local import LocalCluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_eval_command_writes_table_records_and_plot(cluster: LocalCluster, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cluster.cli",
            "eval",
            "--dataset",
            "gsm8k",
            "--limit",
            "2",
            "--efforts",
            "low,medium",
            "--url",
            cluster.url,
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    assert "| low | single_chain | 2 |" in result.stdout
    assert "| medium | self_consistency | 2 |" in result.stdout
    assert len((tmp_path / "gsm8k-records.jsonl").read_text().splitlines()) == 4
    assert (tmp_path / "gsm8k-accuracy.png").stat().st_size > 0
