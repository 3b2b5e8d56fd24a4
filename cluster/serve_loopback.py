"""Keep Serve's listeners of the local cluster on loopback.

Ray Serve 2.60 binds two gRPC servers to "[::]:<port>", every interface, with no setting to
change it: the inter-deployment server of every replica (ray/serve/_private/replica.py) and
the gRPC proxy (ray/serve/_private/default_impl.py). The local cluster makes every Ray worker
run `bind_serve_to_loopback` first (a runtime_env worker_process_setup_hook), which binds both
to 127.0.0.1 instead. This module imports nothing of its own at import time: every Ray worker
loads it. It patches private Serve functions: check it again on every Ray upgrade
(tests/e2e/test_listeners.py fails when a listener leaves loopback).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# A dotted path: Ray loads setup hooks with its load_class, which takes no "module:function".
SETUP_HOOK = "cluster.serve_loopback.bind_serve_to_loopback"
LOOPBACK = "127.0.0.1"
_ALL_INTERFACES = "[::]:"


def bind_serve_to_loopback() -> None:
    from ray.serve._private import default_impl, replica

    replica.add_port_to_grpc_server = _on_loopback(replica.add_port_to_grpc_server)
    default_impl.add_grpc_address = _on_loopback(default_impl.add_grpc_address)  # type: ignore[assignment]


def _on_loopback(bind: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    """`bind` with any every-interface address moved to loopback, the port kept."""

    def on_loopback(server: Any, address: str) -> Any:
        if address.startswith(_ALL_INTERFACES):
            address = f"{LOOPBACK}:{address.removeprefix(_ALL_INTERFACES)}"
        return bind(server, address)

    return on_loopback
