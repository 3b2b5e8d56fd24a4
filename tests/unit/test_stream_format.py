"""The `stream=true` chunk format: SSE framing, chunk shapes as the openai client reads them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.chat import ChatCompletionChunk

from cluster.api import (
    ApiError,
    BudgetView,
    chat_completion_body,
    parse_chat_request,
    reasoning_body,
    usage_body,
)
from cluster.streaming import PREVIEW_CHARS, SSE_DONE, ChunkStream, describe_event, sse
from cluster.types import Effort, SolveResult, Usage

pytestmark = pytest.mark.unit

RESULT = SolveResult(
    tree_id="tree-0001",
    answer="105",
    content="105",
    summary="1. 45 / 3 = 15 ... Answer: 105",
    strategy="best_of_n",
    usage=Usage(prompt_tokens=300, completion_tokens=812, cached_tokens=256),
    branches=8,
    verifier_calls=8,
    winning_path=("n0", "n3"),
)
BUDGET = BudgetView(granted_tokens=2112, spent_tokens=812)
PROGRESS = {
    "depth": 2,
    "best_path": ["Start with the price of one pencil.", "45 / 3 = 15 cents each,\nso 7 cost 105."],
    "explored": 12,
    "pruned": 7,
    "best_score": 0.8125,
}


def _events(stream: bytes) -> list[str]:
    """The data of each event, as an SSE client splits them."""
    assert stream.endswith(b"\n\n")
    events = stream.decode().split("\n\n")[:-1]
    assert all(event.startswith("data: ") and "\n" not in event for event in events)
    return [event.removeprefix("data: ") for event in events]


def _whole_stream(chunks: ChunkStream) -> bytes:
    parts = [
        chunks.role(),
        chunks.progress("chains", {"count": 8, "tokens": 812, "replica": "r1"}),
        chunks.progress("progress", PROGRESS),
        chunks.content(RESULT.content),
        chunks.finish(RESULT.finish_reason),
        chunks.final(usage_body(RESULT.usage), reasoning_body(RESULT, Effort.HIGH, BUDGET)),
    ]
    return b"".join(sse(part) for part in parts) + SSE_DONE


def test_every_chunk_parses_as_the_openai_client_reads_it() -> None:
    data = _events(_whole_stream(ChunkStream("tree-0001", "default", created=1700000000)))
    assert data[-1] == "[DONE]"
    parsed = [ChatCompletionChunk.model_validate(json.loads(d)) for d in data[:-1]]
    assert {chunk.id for chunk in parsed} == {"chatcmpl-tree-0001"}
    assert {chunk.object for chunk in parsed} == {"chat.completion.chunk"}
    assert {chunk.created for chunk in parsed} == {1700000000}
    role, chains, progress, content, finish, final = parsed
    assert role.choices[0].delta.role == "assistant"
    assert [c.choices[0].delta.content for c in (chains, progress)] == [None, None]
    assert content.choices[0].delta.content == "105"
    assert finish.choices[0].finish_reason == "stop"
    assert final.choices == []
    assert final.usage is not None and final.usage.completion_tokens == 812


def test_progress_chunk_carries_text_and_event() -> None:
    chunk = ChunkStream("tree-0001", "default").progress("progress", PROGRESS)
    delta = chunk["choices"][0]["delta"]
    assert delta == {
        "reasoning_content": "depth 2: explored 12, pruned 7; best: 45 / 3 = 15 cents each, so 7 cost 105. "
        "(score 0.81)\n"
    }
    assert chunk["reasoning"] == {**PROGRESS, "event": "progress", "tree_id": "tree-0001"}


def test_event_data_cannot_hide_the_event_kind_or_tree() -> None:
    chunk = ChunkStream("tree-0001", "default").progress("odd", {"event": "done", "tree_id": "other"})
    assert chunk["reasoning"]["event"] == "odd"
    assert chunk["reasoning"]["tree_id"] == "tree-0001"


@pytest.mark.parametrize(
    ("kind", "data", "line"),
    [
        ("chains", {"count": 4, "tokens": 812, "replica": "r1"}, "grew 4 chains (812 tokens)"),
        ("chains", {"count": 1, "tokens": 1, "replica": "r1"}, "grew 1 chain (1 token)"),
        ("strategy", {"choice": "beam", "reason": "hard problem"}, "strategy beam (hard problem)"),
        ("done", {"answer": "105", "reason": "best score"}, "finished with answer 105 (best score)"),
        ("failed", {"error": "TimeoutError()"}, "search failed: TimeoutError()"),
        (
            "progress",
            {"depth": 1, "best_path": [], "explored": 3, "pruned": 0, "best_score": None},
            "depth 1: explored 3, pruned 0",
        ),
        (
            "progress",
            {"depth": 1, "best_path": ["x"], "explored": 3, "pruned": 0, "best_score": None},
            "depth 1: explored 3, pruned 0; best: x",
        ),
        ("lease", {"holder": "planner-2", "attempt": 2}, "lease: holder planner-2, attempt 2"),
        ("heartbeat", {}, "heartbeat"),
    ],
)
def test_each_event_kind_reads_as_one_line(kind: str, data: dict[str, Any], line: str) -> None:
    assert describe_event(kind, data) == line


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"best_path": "not a list", "best_score": "high"},
        {"best_path": [None], "best_score": True, "depth": None},
        {"best_path": [{"text": "a step"}], "explored": -1},
    ],
)
def test_malformed_progress_never_fails(data: dict[str, Any]) -> None:
    line = describe_event("progress", data)
    assert line.startswith("depth ") and "\n" not in line


def test_long_step_is_cut_to_one_short_line() -> None:
    step = "word " * 200 + "\nlast line"
    line = describe_event("progress", {**PROGRESS, "best_path": [step]})
    best = line.split("; best: ", 1)[1]
    assert len(best.removesuffix(" (score 0.81)")) == PREVIEW_CHARS
    assert best.startswith("word word") and "…" in best and "\n" not in line


def test_final_chunk_has_the_usage_and_reasoning_of_the_non_streaming_response() -> None:
    admission = {"requested_effort": "high", "effort": "medium", "degraded": True}
    completion = chat_completion_body(RESULT, "default", Effort.HIGH, BUDGET, admission)
    final = ChunkStream("tree-0001", "default").final(
        usage_body(RESULT.usage), reasoning_body(RESULT, Effort.HIGH, BUDGET, admission)
    )
    assert final["usage"] == completion["usage"]
    assert final["reasoning"] == completion["reasoning"]
    assert final["usage"]["completion_tokens_details"] == {"reasoning_tokens": 812}
    assert final["usage"]["prompt_tokens_details"] == {"cached_tokens": 256}
    assert final["reasoning"]["admission"]["degraded"] is True
    assert final["id"] == completion["id"] == "chatcmpl-tree-0001"


def test_error_event_is_openais_error_body() -> None:
    error = ApiError(504, "the high deadline of 240 s passed", type="timeout_error")
    (data,) = _events(sse(error.body()))
    assert json.loads(data) == {
        "error": {
            "message": "the high deadline of 240 s passed",
            "type": "timeout_error",
            "param": None,
            "code": None,
        }
    }


def test_stream_is_accepted_and_must_be_a_boolean() -> None:
    body = {"model": "default", "messages": [{"role": "user", "content": "What is 2 + 3?"}]}
    assert parse_chat_request(json.dumps(body | {"stream": True}).encode()).stream
    with pytest.raises(ApiError) as raised:
        parse_chat_request(json.dumps(body | {"stream": "yes"}).encode())
    assert raised.value.status == 400 and raised.value.param == "stream"
