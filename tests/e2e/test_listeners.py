"""Closed by default: every socket the local cluster listens on is on loopback.

The processes are the ones the session's local cluster started: this test process is Ray's
driver, so Redis, the GCS, the raylet, the dashboard agent, every Serve replica and every vLLM
engine process are its descendants.
"""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlsplit

import psutil
import pytest
from ray import serve

from cluster.local import APP_NAME, LocalCluster

pytestmark = [pytest.mark.e2e]


def _listeners() -> list[tuple[str, int, str]]:
    """(address, port, process) of every listening TCP socket of this process tree."""
    found = []
    root = psutil.Process(os.getpid())
    for process in [root, *root.children(recursive=True)]:
        try:
            connections = process.net_connections(kind="inet")
            name = " ".join(process.cmdline())[:80] or process.name()
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue  # ended since the listing; it listens on nothing any more
        found += [(c.laddr.ip, c.laddr.port, name) for c in connections if c.status == psutil.CONN_LISTEN]
    return found


def _on_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def test_every_listener_of_the_local_cluster_is_on_loopback(cluster: LocalCluster) -> None:
    # Replicas start their servers while they initialise; RUNNING means every one has.
    assert serve.status().applications[APP_NAME].status == "RUNNING"
    listeners = _listeners()
    ports = {port for _, port, _ in listeners}
    # The gateway's HTTP port and Redis' port are among them: the listing sees the cluster.
    assert cluster.port in ports
    assert cluster.config.redis.url is not None
    assert urlsplit(cluster.config.redis.url).port in ports
    replicas = [entry for entry in listeners if "ServeReplica" in entry[2]]
    assert replicas, listeners
    open_ = [entry for entry in listeners if not _on_loopback(entry[0])]
    assert not open_, f"listening beyond loopback: {open_}"
