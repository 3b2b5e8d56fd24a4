"""One local cluster (real Redis, Ray Serve on loopback, vLLM with the small model) per session."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from openai import OpenAI

from cluster.local import LocalCluster
from tests.plumbing import plumbing_config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    # These tests check the service's plumbing, not the quality of answers: the small model.
    with LocalCluster(plumbing_config(), port=free_port(), grpc_port=free_port()) as running:
        yield running


@pytest.fixture(scope="session")
def openai_client(cluster: LocalCluster) -> Iterator[OpenAI]:
    client = OpenAI(base_url=f"{cluster.url}/v1", api_key="test", timeout=300, max_retries=0)
    yield client
    client.close()
