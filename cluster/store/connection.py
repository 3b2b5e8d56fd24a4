"""The one way a process connects to Redis: timeouts, a bounded pool, the password from a file.

Every client of the cluster (gateway, planner, admission control, demand probes, metrics)
comes from `redis_client`, so none can wait forever on a hung Redis or open connections
without bound: a command fails after `socket_timeout_s`, a connection attempt after
`connect_timeout_s`, and a command that finds every pooled connection busy waits at most
`pool_timeout_s`. Commands are not retried: a retried Lua script could run twice (a budget
reserved twice); connections the server closed are replaced before use by the pool itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from cluster.config import RedisConfig

R = TypeVar("R", bound=Redis)


class RedisConfigError(ValueError):
    """The Redis settings cannot make a client (no URL, an unreadable password file)."""


def read_password(path: Path | None) -> str | None:
    """The password in `path` (a mounted Secret), without its trailing newline."""
    if path is None:
        return None
    try:
        password = path.read_text().rstrip("\r\n")
    except OSError as exc:
        raise RedisConfigError(f"redis.password_file {str(path)!r} cannot be read: {exc.strerror}") from None
    if not password:
        raise RedisConfigError(f"redis.password_file {str(path)!r} is empty")
    return password


def redis_client(config: RedisConfig, client_class: type[R] = Redis) -> R:  # type: ignore[assignment]
    """A client of `config.url` with the cluster's timeouts and a bounded connection pool."""
    if config.url is None:
        raise RedisConfigError("redis.url must be set (or REDIS_URL) before connecting to Redis")
    pool = BlockingConnectionPool.from_url(
        config.url,
        password=read_password(config.password_file),
        max_connections=config.max_connections,
        timeout=config.pool_timeout_s,
        socket_timeout=config.socket_timeout_s,
        socket_connect_timeout=config.connect_timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
    return client_class(connection_pool=pool)
