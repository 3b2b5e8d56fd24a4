"""`reasoning-cluster simulate` reaches the simulator by import path; `cluster` does not import it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from autoscale.sim.cli import compare
from autoscale.sim.trace import Trace
from cluster.cli import main

pytestmark = pytest.mark.unit

SMALL = {
    "name": "small",
    "pool": {
        "replica_tokens_per_s": 100.0,
        "seq_tokens_per_s": 50.0,
        "max_seqs_per_replica": 8,
        "startup_s": 2.0,
    },
    "efforts": {"low": {"deadline_s": 30, "branches": 1}, "high": {"deadline_s": 60, "branches": 4}},
    "scaling": {"min_replicas": 1, "max_replicas": 4},
    "default_policies": {"ray-default": {}, "ray-fast": {"upscale_delay_s": 0, "downscale_delay_s": 10}},
    "requests": [[i * 1.5, "high" if i % 4 == 0 else "low", 200 + 10 * i] for i in range(40)],
}


def test_simulate_command_runs_every_policy_of_the_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "small.json"
    path.write_text(json.dumps(SMALL))
    assert main(["simulate", "--trace", str(path), "--out", str(tmp_path / "out"), "--jobs", "1"]) == 0
    assert "simulated 3 policies over 40 requests" in capsys.readouterr().out
    written = json.loads((tmp_path / "out" / "small.json").read_text())["results"]
    assert written == [result.row() for result in compare(Trace.from_dict(SMALL))]


def test_cluster_cli_imports_nothing_from_autoscale() -> None:
    probe = "import sys, cluster.cli; print(sorted(m for m in sys.modules if m.split('.')[0] == 'autoscale'))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
