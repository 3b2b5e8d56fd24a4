"""The local cluster's Ray worker setup hook binds Serve's gRPC listeners to loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator

import grpc
import psutil
import pytest
from ray._common.utils import load_class
from ray.serve._private import default_impl, replica

from cluster.serve_loopback import SETUP_HOOK, bind_serve_to_loopback
from deployments.rpc import _is_loopback

pytestmark = pytest.mark.unit


@pytest.fixture
def hooked() -> Iterator[None]:
    originals = default_impl.add_grpc_address, replica.add_port_to_grpc_server
    # What Ray runs in every worker: the hook named by its import path, loaded Ray's way.
    load_class(SETUP_HOOK)()
    try:
        yield
    finally:
        default_impl.add_grpc_address, replica.add_port_to_grpc_server = originals


def _listening() -> set[tuple[str, int]]:
    connections = psutil.Process(os.getpid()).net_connections(kind="inet")
    return {(c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN}


def test_the_hook_is_the_function_ray_loads() -> None:
    assert load_class(SETUP_HOOK) is bind_serve_to_loopback


@pytest.mark.parametrize("bind", ["proxy", "replica"])
async def test_serve_grpc_addresses_on_every_interface_become_loopback(hooked: None, bind: str) -> None:
    before = _listening()
    server = grpc.aio.server()
    # Serve's proxy and every replica ask for "[::]:<port>" (ray/serve/_private/).
    add = default_impl.add_grpc_address if bind == "proxy" else replica.add_port_to_grpc_server
    add(server, "[::]:0")
    await server.start()
    try:
        new = {ip for ip, _ in _listening() - before}
        assert new and all(_is_loopback(ip) for ip in new), new
    finally:
        await server.stop(None)
