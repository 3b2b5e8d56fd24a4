"""`stream=true` end to end: progress then answer as chunks, errors, and cancellation on disconnect."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam
from redis import Redis

from cluster.auth import scoped_tree_id
from cluster.config import ANONYMOUS
from cluster.local import LocalCluster
from cluster.store import KeySpace

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

QUESTION = "If 3 pencils cost 45 cents, how many cents do 7 pencils cost?"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": QUESTION}]


def _tree(cluster: LocalCluster, tree_id: str) -> dict[str, Any]:
    response = httpx.get(f"{cluster.url}/v1/trees/{tree_id}", timeout=10)
    response.raise_for_status()
    return dict(response.json())


def _wait_for(
    what: str, probe: Callable[[], dict[str, Any] | None], timeout_s: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def low_stream(openai_client: OpenAI) -> list[ChatCompletionChunk]:
    stream = openai_client.chat.completions.create(
        model="default", messages=MESSAGES, reasoning_effort="low", stream=True, seed=7
    )
    return list(stream)


@pytest.fixture
def sse_lines(cluster: LocalCluster) -> Iterator[Callable[[str, str], Generator[str]]]:
    """Opens raw streams (closed when the test ends or earlier); yields their `data:` payloads."""
    client = httpx.Client(base_url=cluster.url, timeout=300)

    def open_stream(effort: str, request_id: str) -> Generator[str]:
        body = {"model": "default", "messages": MESSAGES, "reasoning_effort": effort, "stream": True}
        headers = {"X-Request-Id": request_id}
        with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line.startswith("data: "):
                    yield line.removeprefix("data: ")

    yield open_stream
    client.close()


def test_chunks_share_one_id_and_end_with_the_answer(low_stream: list[ChatCompletionChunk]) -> None:
    tree_id = (low_stream[-1].model_extra or {})["reasoning"]["tree_id"]
    assert {chunk.id for chunk in low_stream} == {f"chatcmpl-{tree_id}"}
    assert {chunk.object for chunk in low_stream} == {"chat.completion.chunk"}
    assert low_stream[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in low_stream if c.choices)
    assert content.strip()
    assert [c.choices[0].finish_reason for c in low_stream if c.choices and c.choices[0].finish_reason]
    assert low_stream[-1].choices == []


def test_progress_comes_before_the_answer(low_stream: list[ChatCompletionChunk]) -> None:
    def is_progress(chunk: ChatCompletionChunk) -> bool:
        return bool(chunk.choices) and "reasoning_content" in (chunk.choices[0].delta.model_extra or {})

    progress = [i for i, chunk in enumerate(low_stream) if is_progress(chunk)]
    answer = [i for i, chunk in enumerate(low_stream) if chunk.choices and chunk.choices[0].delta.content]
    assert progress and answer
    assert max(progress) < min(answer)
    kinds = [(low_stream[i].model_extra or {})["reasoning"]["event"] for i in progress]
    assert "chains" in kinds and kinds[-1] == "done", kinds
    texts = [(low_stream[i].choices[0].delta.model_extra or {})["reasoning_content"] for i in progress]
    assert all(text.endswith("\n") and text.strip() for text in texts)


def test_final_usage_matches_the_ledger(low_stream: list[ChatCompletionChunk], cluster: LocalCluster) -> None:
    final = low_stream[-1]
    reasoning = (final.model_extra or {})["reasoning"]
    usage = final.usage
    assert usage is not None and usage.completion_tokens_details is not None
    tree = _tree(cluster, reasoning["tree_id"])
    reasoning_tokens = usage.completion_tokens_details.reasoning_tokens
    assert reasoning_tokens == tree["budget"]["spent"]["tokens"] > 0
    assert reasoning["budget"]["spent_tokens"] == reasoning_tokens
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens > 0
    assert tree["meta"]["status"] == "done"
    assert reasoning["effort"] == "low" and reasoning["summary"]


def test_bad_streaming_request_is_a_json_error(cluster: LocalCluster, openai_client: OpenAI) -> None:
    body = {"model": "default", "messages": MESSAGES, "reasoning_effort": "extreme", "stream": True}
    response = httpx.post(f"{cluster.url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["param"] == "reasoning_effort"
    with pytest.raises(openai.NotFoundError):
        openai_client.chat.completions.create(model="gpt-9", messages=MESSAGES, stream=True)


def test_disconnect_cancels_the_search_and_releases_its_budget(
    cluster: LocalCluster, sse_lines: Callable[[str, str], Generator[str]]
) -> None:
    tree_id = uuid.uuid4().hex
    stream = sse_lines("high", tree_id)
    first = json.loads(next(stream))
    assert first["choices"][0]["delta"] == {"role": "assistant"}

    def reserving() -> dict[str, Any] | None:
        tree = _tree(cluster, tree_id)
        return tree if tree["budget"]["reserved"].get("tokens", 0) > 0 else None

    # Leave while the planner holds budget for an engine call: that is what must come back.
    _wait_for("a reservation", reserving, timeout_s=60)
    stream.close()

    def ended() -> dict[str, Any] | None:
        tree = _tree(cluster, tree_id)
        return tree if tree["meta"]["status"] != "running" else None

    tree = _wait_for("the tree to end", ended)
    assert tree["meta"]["status"] == "cancelled"
    budget = tree["budget"]
    assert budget["reserved"]["tokens"] == 0
    assert budget["spent"].get("tokens", 0) < budget["granted"]["tokens"]


def test_failure_after_the_start_is_an_error_event(cluster: LocalCluster, openai_client: OpenAI) -> None:
    tree_id = uuid.uuid4().hex
    stream = openai_client.chat.completions.create(
        model="default",
        messages=MESSAGES,
        reasoning_effort="high",
        stream=True,
        extra_headers={"X-Request-Id": tree_id},
    )
    next(iter(stream))
    # The tree vanishing under the planner (as when it expires) fails the search mid-stream.
    assert cluster.config.redis.url is not None
    with Redis.from_url(cluster.config.redis.url) as redis:
        stored = scoped_tree_id(ANONYMOUS, tree_id)
        assert redis.delete(KeySpace(cluster.config.redis.key_prefix).tree(stored).meta) == 1
    # The error event is OpenAI's error body; the official client raises it as an APIError.
    with pytest.raises(openai.APIError) as raised:
        list(stream)
    assert raised.value.body == {
        "message": raised.value.message,
        "type": "server_error",
        "param": None,
        "code": None,
    }
    assert stored in raised.value.message
