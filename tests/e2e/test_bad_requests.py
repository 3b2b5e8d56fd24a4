"""Bad input gets a 4xx with an OpenAI-style body, and the service keeps serving."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from cluster.local import LocalCluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

GOOD = {"model": "default", "messages": [{"role": "user", "content": "What is 2 + 3?"}]}


def _post(cluster: LocalCluster, body: Any = None, content: bytes | None = None) -> httpx.Response:
    return httpx.post(
        f"{cluster.url}/v1/chat/completions",
        json=body,
        content=content,
        timeout=60,
        headers={"Content-Type": "application/json"},
    )


def _error(response: httpx.Response) -> dict[str, Any]:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return dict(error)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (
            GOOD | {"reasoning_effort": "extreme"},
            400,
            ["reasoning_effort", *(f"'{e}'" for e in ("none", "minimal", "low", "medium", "high", "xhigh"))],
        ),
        (GOOD | {"messages": []}, 400, ["messages"]),
        (GOOD | {"messages": "What is 2 + 3?"}, 400, ["messages"]),
        (GOOD | {"messages": [{"role": "user", "content": 5}]}, 400, ["content"]),
        (GOOD | {"messages": [{"role": "wizard", "content": "hi"}]}, 400, ["role"]),
        (GOOD | {"messages": [{"role": "system", "content": "be brief"}]}, 400, ["user message"]),
        (GOOD | {"reasoning_effort": 3}, 400, ["reasoning_effort"]),
        (GOOD | {"max_completion_tokens": "many"}, 400, ["max_completion_tokens"]),
        (GOOD | {"max_completion_tokens": 1}, 400, ["max_completion_tokens", "16"]),
        (GOOD | {"n": 3}, 400, ["n"]),
        (GOOD | {"stream": "yes"}, 400, ["stream"]),
        (GOOD | {"task": "chess"}, 400, ["task", "'game24'"]),
        (GOOD | {"task": "game24"}, 400, ["four whole numbers"]),
        (GOOD | {"model": "gpt-9"}, 404, ["gpt-9", "default"]),
        ({"messages": GOOD["messages"]}, 400, ["model"]),
        ([1, 2, 3], 400, ["JSON object"]),
    ],
)
def test_bad_request_gets_clear_error(
    cluster: LocalCluster, body: Any, status: int, words: list[str]
) -> None:
    response = _post(cluster, body)
    assert response.status_code == status, response.text
    message = _error(response)["message"]
    for word in words:
        assert word in message, message


def test_non_json_body(cluster: LocalCluster) -> None:
    response = _post(cluster, content=b"{not json")
    assert response.status_code == 400
    assert "not valid JSON" in _error(response)["message"]


def test_over_long_prompt(cluster: LocalCluster) -> None:
    words = " ".join(["pencil"] * 4000)
    response = _post(cluster, GOOD | {"messages": [{"role": "user", "content": words}]})
    assert response.status_code == 400
    error = _error(response)
    assert error["code"] == "context_length_exceeded"
    assert "tokens" in error["message"]


def test_openai_client_raises_bad_request_with_the_message(openai_client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "hi"}],
            reasoning_effort="ultra",  # type: ignore[arg-type]
        )
    assert "reasoning_effort must be one of" in str(caught.value)


def test_service_keeps_serving_after_bad_requests(cluster: LocalCluster, openai_client: OpenAI) -> None:
    for body in ([], {"model": 1}, GOOD | {"messages": None}):
        assert _post(cluster, body).status_code == 400
    assert _post(cluster, content=b"\xff\xfe").status_code == 400
    response = openai_client.chat.completions.create(
        model="default", messages=GOOD["messages"], reasoning_effort="low"
    )
    assert response.choices[0].message.content
