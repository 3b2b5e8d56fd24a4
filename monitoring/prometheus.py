"""A throwaway Prometheus server on loopback (Debian's `prometheus`), for tests and local looks.

It scrapes the given targets (the local cluster's Ray metrics endpoint), loads the alert
rules, and is stopped by the PID it was started with.

    with PrometheusServer([cluster.metrics_url]) as prom:
        prom.query('sum(rate(ray_rc_requests_total[1m]))')
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

RULES_FILE = Path(__file__).parent / "alerts" / "reasoning-cluster.rules.yaml"
LOOPBACK = "127.0.0.1"


class PrometheusError(RuntimeError):
    pass


def find_binary(name: str = "prometheus") -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        raise PrometheusError(f"{name} is not installed: apt-get install prometheus (scripts/setup.sh does)")
    return path


def scrape_config(metrics_urls: Sequence[str], scrape_interval: str = "15s") -> dict[str, Any]:
    """A Prometheus config scraping Ray metrics endpoints (http://host:port/metrics)."""
    targets = []
    for url in metrics_urls:
        parts = urllib.parse.urlsplit(url)
        targets.append(parts.netloc)
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": [str(RULES_FILE)],
        "scrape_configs": [
            {
                "job_name": "reasoning-cluster",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": targets}],
            }
        ],
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class PrometheusServer:
    def __init__(self, metrics_urls: Sequence[str], scrape_interval: str = "2s") -> None:
        self._metrics_urls = list(metrics_urls)
        self._scrape_interval = scrape_interval
        self._process: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout_s: float = 30.0) -> PrometheusServer:
        binary = find_binary()
        self._tmp = tempfile.TemporaryDirectory(prefix="rc-prometheus-")
        root = Path(self._tmp.name)
        config = root / "prometheus.yml"
        config.write_text(yaml.safe_dump(scrape_config(self._metrics_urls, self._scrape_interval)))
        self.port = _free_port()
        log = (root / "prometheus.log").open("wb")
        self._process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address={LOOPBACK}:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise PrometheusError(f"prometheus exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        self.stop()
        raise PrometheusError(f"prometheus was not ready in {timeout_s:g} s")

    def log_tail(self, chars: int = 2000) -> str:
        if self._tmp is None:
            return ""
        path = Path(self._tmp.name) / "prometheus.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}"
        data = urllib.parse.urlencode(params).encode() if params else None
        try:
            with urllib.request.urlopen(url, data=data, timeout=30) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (raises PrometheusError on a bad expression)."""
        data = self.api("query", query=expr)
        result = data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return list(result)

    def targets_up(self) -> list[dict[str, Any]]:
        return [t for t in self.api("targets")["activeTargets"] if t["health"] == "up"]

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
