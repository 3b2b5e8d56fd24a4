"""Keep the Serve replicas of the local cluster on loopback.

Ray Serve 2.60 starts an inter-deployment gRPC server in every replica on "[::]:0", every
interface, with no setting to change it (ray/serve/_private/replica.py). The local cluster makes
every Ray worker run `bind_serve_replicas_to_loopback` first (a runtime_env
worker_process_setup_hook), which binds that server to 127.0.0.1 instead. This module imports
nothing of its own at import time: every Ray worker loads it.
"""

from __future__ import annotations

from typing import Any

# A dotted path: Ray loads setup hooks with its load_class, which takes no "module:function".
SETUP_HOOK = "cluster.serve_loopback.bind_serve_replicas_to_loopback"
LOOPBACK = "127.0.0.1"
_ALL_INTERFACES = "[::]:"


def bind_serve_replicas_to_loopback() -> None:
    from ray.serve._private import replica

    bind = replica.add_port_to_grpc_server

    def on_loopback(server: Any, address: str) -> int:
        if address.startswith(_ALL_INTERFACES):
            address = f"{LOOPBACK}:{address.removeprefix(_ALL_INTERFACES)}"
        return int(bind(server, address))

    replica.add_port_to_grpc_server = on_loopback
