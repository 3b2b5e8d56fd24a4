"""The local embedded cluster: a real redis-server, a Ray head on loopback, the Serve app.

Everything it starts it stops again, by handle or recorded PID, so Ctrl-C leaves no Ray
or Redis process behind.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any

from cluster.config import ClusterConfig
from cluster.rpc import SERVICER_FUNCTION
from cluster.serve_loopback import LOOPBACK, SETUP_HOOK
from cluster.store.redis_server import EmbeddedRedis

logger = logging.getLogger(__name__)

# The builder is named, not imported: `cluster` must not depend on `deployments` (the
# same indirection a Serve YAML `import_path` uses).
APP_BUILDER = "deployments.builder:build_app"
APP_NAME = "reasoning-cluster"


def import_object(path: str) -> Callable[..., Any]:
    module, _, attribute = path.partition(":")
    obj = getattr(importlib.import_module(module), attribute)
    if not callable(obj):
        raise TypeError(f"{path} is not callable")
    return obj


def keep_ray_on_loopback() -> None:
    """Keep every Ray listener on 127.0.0.1.

    Without RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 Ray rewrites 127.0.0.1 to the machine's
    external address. Ray reads it once, when it is first imported.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and getattr(constants, "ENABLE_RAY_CLUSTER", False):
        raise RuntimeError(
            "ray was imported before cluster.local, so it would listen on the external address; "
            "import cluster.local first"
        )


keep_ray_on_loopback()


class LocalCluster:
    def __init__(self, config: ClusterConfig, port: int | None = None, grpc_port: int | None = None) -> None:
        self._config = config
        self.port = port if port is not None else config.http.port
        self.grpc_port = grpc_port if grpc_port is not None else config.grpc.port
        self._redis: EmbeddedRedis | None = None
        self._ray_started = False

    @property
    def config(self) -> ClusterConfig:
        return self._config

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def grpc_target(self) -> str | None:
        """`host:port` of the gRPC API, None when config turns it off."""
        return f"{LOOPBACK}:{self.grpc_port}" if self._config.grpc.enabled else None

    @property
    def metrics_url(self) -> str:
        """Prometheus endpoint of this node's Ray metrics agent (every deployment's metrics)."""
        import ray

        port = ray._private.worker.global_worker.node.metrics_export_port
        return f"http://{LOOPBACK}:{port}/metrics"

    def start(self) -> LocalCluster:
        try:
            self._start_redis()
            self._start_ray()
            self._deploy()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_redis(self) -> None:
        if self._config.redis.url is not None:
            logger.info("using external Redis at %s", self._config.redis.url)
            return
        self._redis = EmbeddedRedis().start()
        self._config = self._config.with_overrides({"redis": {"url": self._redis.url}})
        logger.info("embedded redis-server (pid %s) at %s", self._redis.pid, self._redis.url)

    def _start_ray(self) -> None:
        import ray

        ray.init(
            address="local",
            _node_ip_address=LOOPBACK,
            include_dashboard=False,
            # Ray's metrics agent serves every deployment's metrics to Prometheus (monitoring/).
            _metrics_export_port=self._config.http.metrics_port,
            num_cpus=max(os.cpu_count() or 1, 2),
            logging_level=logging.WARNING,
            log_to_driver=os.environ.get("RC_RAY_LOG_TO_DRIVER", "0") == "1",
            # Serve's own listeners would take every interface without it (cluster/serve_loopback.py).
            runtime_env={"worker_process_setup_hook": SETUP_HOOK},
        )
        self._ray_started = True

    def _deploy(self) -> None:
        from ray import serve

        grpc: dict[str, Any] = {}
        if self._config.grpc.enabled:
            grpc = {"port": self.grpc_port, "grpc_servicer_functions": [SERVICER_FUNCTION]}
        serve.start(http_options={"host": LOOPBACK, "port": self.port}, grpc_options=grpc or None)
        app = import_object(APP_BUILDER)(self._config)
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        logger.info("serving on %s (gRPC: %s)", self.url, self.grpc_target or "off")

    def stop(self) -> None:
        if self._ray_started:
            import ray
            from ray import serve

            try:
                serve.shutdown()
            finally:
                ray.shutdown()
                self._ray_started = False
        if self._redis is not None:
            self._redis.stop()
            self._redis = None

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
