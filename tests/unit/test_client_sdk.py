"""The SDK's typed results and retries: both transports read the same response the same way,
and a retry resends the same request id."""

from __future__ import annotations

import asyncio

import pytest

from cluster.api import BudgetView
from cluster.client import AsyncReasoningClient
from cluster.client_transports import (
    ReasoningError,
    ReasoningRequest,
    ReasoningResult,
    _grpc_result,
    _http_event,
    _result,
)
from cluster.responses import ResponseEvents, ResponseShape, outcome_of, response_object
from cluster.rpc.messages import response_message
from cluster.types import Effort, SolveResult, Usage

pytestmark = pytest.mark.unit

RESULT = SolveResult(
    tree_id="tree-0002",
    answer="391",
    content="391",
    summary="1. 17 * 23 = 391. Answer: 391 (verified).",
    strategy="single_chain",
    usage=Usage(prompt_tokens=40, completion_tokens=30, cached_tokens=0),
    branches=1,
    verifier_calls=1,
    winning_path=("n0", "n1"),
)
SHAPE = ResponseShape(
    tree_id="tree-0002", model="default", effort=Effort.LOW, summary="auto", background=False
)


def test_both_transports_read_a_response_the_same_way() -> None:
    stored = response_object(SHAPE, "completed", [RESULT.summary], outcome_of(RESULT, BudgetView(256, 30)))
    over_http = _result(stored)
    assert over_http == ReasoningResult(
        id="resp_tree-0002",
        status="completed",
        answer="391",
        summary=(RESULT.summary,),
        tree_id="tree-0002",
        effort="low",
        strategy="single_chain",
        usage=over_http.usage,
    )
    assert over_http.usage is not None and over_http.usage.reasoning_tokens == 30 and over_http.done
    assert _grpc_result(response_message(stored)) == over_http


def test_http_stream_events_become_typed_events() -> None:
    events = ResponseEvents(SHAPE)
    stream = events.started() + events.summary_part(RESULT.summary)
    stream += events.finished(outcome_of(RESULT, BudgetView(256, 30)))
    typed = [e for e in (_http_event(raw) for raw in stream) if e is not None]
    assert [e.kind for e in typed] == ["summary", "answer", "done"]
    assert typed[0].text == RESULT.summary and typed[1].text == "391"
    assert typed[-1].result is not None and typed[-1].result.answer == "391"
    with pytest.raises(ReasoningError, match="gone"):
        _http_event({"type": "error", "sequence_number": 3, "message": "gone", "code": "not_found_error"})


class _FlakyTransport:
    """Fails `failures` times with `error`, then answers; records the request ids it saw."""

    def __init__(self, failures: int, error: ReasoningError) -> None:
        self.failures, self.error, self.request_ids = failures, error, list[str]()

    async def create(
        self, request: ReasoningRequest, request_id: str, background: bool, timeout_s: float | None
    ) -> ReasoningResult:
        self.request_ids.append(request_id)
        if len(self.request_ids) <= self.failures:
            raise self.error
        return _result(response_object(SHAPE, "queued"))


def _client(transport: _FlakyTransport, retries: int) -> AsyncReasoningClient:
    client = AsyncReasoningClient(max_retries=retries)
    client._transport = transport  # type: ignore[assignment]
    return client


def test_transient_failures_are_retried_with_the_same_request_id() -> None:
    flaky = _FlakyTransport(2, ReasoningError(503, "no replica", "unavailable", transient=True))
    result = asyncio.run(_client(flaky, retries=2).submit("What is 17 * 23?", effort="low"))
    assert result.status == "queued"
    assert len(flaky.request_ids) == 3 and len(set(flaky.request_ids)) == 1


def test_other_failures_are_not_retried() -> None:
    flaky = _FlakyTransport(1, ReasoningError(400, "bad effort"))
    with pytest.raises(ReasoningError, match="bad effort"):
        asyncio.run(_client(flaky, retries=2).respond("hi", request_id="req-00000001"))
    assert flaky.request_ids == ["req-00000001"]
