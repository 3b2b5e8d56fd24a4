"""Shared fixtures: one real redis-server per test session, a clean database per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis

# Imported before anything imports ray: it keeps Ray on loopback, which ray reads at import.
import cluster.local  # noqa: F401
from cluster.store.redis_server import EmbeddedRedis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """URL of a real redis-server started once for the whole session."""
    with EmbeddedRedis() as server:
        yield server.url


@pytest_asyncio.fixture
async def redis_client(redis_server: str) -> AsyncIterator[Redis]:
    """An asyncio client on an empty database, so tests never see each other's keys."""
    client = Redis.from_url(redis_server)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()
