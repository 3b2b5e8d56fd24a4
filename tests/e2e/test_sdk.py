"""The client SDK against the local cluster over both transports: typed results, idempotent
retries by request id, background jobs (submit, wait, stream, cancel), sync and async."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cluster.auth import scoped_tree_id
from cluster.client import AsyncReasoningClient, ReasoningClient, ReasoningError
from cluster.config import ANONYMOUS
from cluster.local import LocalCluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

QUESTION = "If 3 pencils cost 45 cents, how many cents do 7 pencils cost?"
TRANSPORTS = ("http", "grpc")


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(cluster: LocalCluster, transport: str) -> Iterator[ReasoningClient]:
    assert cluster.grpc_target is not None
    sdk = ReasoningClient(cluster.url, transport=transport, grpc_target=cluster.grpc_target)  # type: ignore[arg-type]
    yield sdk
    sdk.close()


def _spent(cluster: LocalCluster, tree_id: str) -> int:
    tree = httpx.get(f"{cluster.url}/v1/trees/{tree_id}", timeout=10).json()
    return int(tree["budget"]["spent"]["tokens"])


def test_respond_and_a_retry_with_its_request_id(client: ReasoningClient, cluster: LocalCluster) -> None:
    request_id = f"sdk-{uuid.uuid4().hex[:12]}"
    options: dict[str, Any] = {"effort": "none", "max_output_tokens": 32, "request_id": request_id}
    first = client.respond(QUESTION, timeout_s=120, **options)
    # The tree's id is the request id in the caller's own namespace (docs/security.md).
    assert first.done and first.answer.strip() and first.tree_id == scoped_tree_id(ANONYMOUS, request_id)
    assert first.usage is not None and first.usage.reasoning_tokens == _spent(cluster, first.tree_id) > 0
    # The same request again (a retry): the same response, not a second search.
    again = client.respond(QUESTION, timeout_s=120, **options)
    assert again == first
    with pytest.raises(ReasoningError) as conflict:
        client.respond("Something else?", effort="none", request_id=request_id, timeout_s=60)
    assert conflict.value.status == 409 and "X-Request-Id" in conflict.value.message


def test_submit_wait_and_stream(client: ReasoningClient, cluster: LocalCluster) -> None:
    queued = client.submit(QUESTION, effort="low", max_output_tokens=48, summary="detailed", timeout_s=60)
    assert queued.status == "queued" and not queued.done
    done = client.wait(queued.id, timeout_s=180)
    assert done.id == queued.id and done.done and done.answer.strip()
    assert done.usage is not None and done.usage.reasoning_tokens == _spent(cluster, done.tree_id)
    assert client.retrieve(queued.id) == done
    events = list(client.stream(QUESTION, effort="none", max_output_tokens=32, timeout_s=120))
    assert [e.sequence_number for e in events] == sorted({e.sequence_number for e in events})
    assert events[-1].kind == "done" and events[-1].result is not None
    assert events[-1].result.answer.strip()
    assert {e.kind for e in events[:-1]} <= {"progress", "summary", "answer"} and events[:-1]


def test_async_client_cancels_a_background_job(cluster: LocalCluster, transport: str) -> None:
    assert cluster.grpc_target is not None

    async def run() -> tuple[Any, Any]:
        sdk = AsyncReasoningClient(
            cluster.url,
            transport=transport,
            grpc_target=cluster.grpc_target,  # type: ignore[arg-type]
        )
        try:
            queued = await sdk.submit(QUESTION, effort="high", timeout_s=60)
            deadline = time.monotonic() + 60
            while (await sdk.retrieve(queued.id)).status == "queued" and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            return queued, await sdk.cancel(queued.id, timeout_s=60)
        finally:
            await sdk.close()

    queued, cancelled = asyncio.run(run())
    assert cancelled.id == queued.id and cancelled.status == "cancelled"
    tree = httpx.get(f"{cluster.url}/v1/trees/{queued.tree_id}", timeout=10).json()
    assert tree["meta"]["status"] == "cancelled" and tree["budget"]["reserved"]["tokens"] == 0
