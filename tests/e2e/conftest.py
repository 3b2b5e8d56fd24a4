"""One local cluster (real Redis, Ray Serve on loopback, vLLM with the small model) per session,
exporting its request traces to a loopback OTLP/HTTP receiver."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from openai import OpenAI

from cluster.local import LocalCluster
from tests.otlp import Collector, otlp_collector
from tests.plumbing import plumbing_config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def trace_collector() -> Iterator[Collector]:
    with otlp_collector() as running:
        yield running


@pytest.fixture(scope="session")
def cluster(trace_collector: Collector) -> Iterator[LocalCluster]:
    # These tests check the service's plumbing, not the quality of answers: the small model.
    config = plumbing_config({"tracing": {"endpoint": trace_collector.url}})
    with LocalCluster(config, port=free_port(), grpc_port=free_port()) as running:
        yield running


@pytest.fixture(scope="session")
def openai_client(cluster: LocalCluster) -> Iterator[OpenAI]:
    client = OpenAI(base_url=f"{cluster.url}/v1", api_key="test", timeout=300, max_retries=0)
    yield client
    client.close()
