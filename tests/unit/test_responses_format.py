"""The Responses API schema: request validation, the Response object and its stream events,
checked against the `openai` package's own types."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from cluster.api import ApiError, BudgetView
from cluster.responses import (
    Outcome,
    ResponseEvents,
    ResponseShape,
    final_parts,
    outcome_of,
    parse_response_request,
    path_steps,
    progress_part,
    response_object,
    sse_event,
    tree_id_of,
)
from cluster.types import Effort, SolveResult, Usage

pytestmark = pytest.mark.unit

RESULT = SolveResult(
    tree_id="tree-0001",
    answer="105",
    content="105",
    summary="1. 45 / 3 = 15 ... Answer: 105 (best of 8).",
    strategy="best_of_n",
    usage=Usage(prompt_tokens=300, completion_tokens=812, cached_tokens=256),
    branches=8,
    verifier_calls=8,
    winning_path=("n0", "n3"),
)
BUDGET = BudgetView(granted_tokens=2112, spent_tokens=812)
SHAPE = ResponseShape(
    tree_id="tree-0001", model="default", effort=Effort.HIGH, summary="auto", background=True, created_at=1.0
)
PROGRESS = {
    "depth": 2,
    "best_path": ["Price of one: 45 / 3 = 15.", "7 * 15 = 105."],
    "explored": 6,
    "pruned": 1,
}
EVENT = TypeAdapter(ResponseStreamEvent)


def _parse(body: dict[str, Any]) -> Any:
    return parse_response_request(json.dumps(body).encode())


def test_string_input_and_instructions_become_chat_messages() -> None:
    request = _parse({"model": "default", "input": "What is 2+3?", "instructions": "Be brief."})
    assert [(m.role, m.content) for m in request.chat_messages()] == [
        ("system", "Be brief."),
        ("user", "What is 2+3?"),
    ]
    assert request.summary_detail == "auto" and request.reasoning_effort is None
    assert request.task == "general"


def test_message_list_input_with_text_parts() -> None:
    request = _parse(
        {
            "model": "default",
            "input": [
                {"role": "developer", "content": "Think."},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "4 9 10 13"}]},
            ],
            "reasoning": {"effort": "xhigh", "summary": "detailed"},
            "task": "game24",
            "max_output_tokens": 64,
        }
    )
    messages = [(m.role, m.content) for m in request.chat_messages()]
    assert messages == [("system", "Think."), ("user", "4 9 10 13")]
    assert request.reasoning_effort is Effort.XHIGH and request.summary_detail == "detailed"
    assert request.completion_cap() == 64


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        (
            {"reasoning": {"effort": "max"}},
            ["reasoning.effort", *(repr(e.value) for e in Effort)],
        ),
        ({"reasoning": {"summary": "verbose"}}, ["reasoning.summary", "'concise'", "'detailed'"]),
        ({"input": ""}, ["input"]),
        ({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}, ["input_text"]),
        ({"background": True, "store": False}, ["background"]),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, ["16 pairs"]),
        ({"max_output_tokens": 3}, ["max_output_tokens"]),
        ({"task": "poetry"}, ["task", "'game24'"]),
    ],
)
def test_bad_requests_name_what_to_fix(body: dict[str, Any], fragments: list[str]) -> None:
    with pytest.raises(ApiError) as raised:
        _parse({"model": "default", "input": "hi"} | body)
    assert raised.value.status == 400
    for fragment in fragments:
        assert fragment in raised.value.message


def test_digest_ignores_stream_but_not_content() -> None:
    base = {"model": "default", "input": "hi"}
    assert _parse(base).digest() == _parse(base | {"stream": True}).digest()
    assert _parse(base).digest() != _parse(base | {"input": "ho"}).digest()


def test_completed_response_is_an_openai_response() -> None:
    outcome = outcome_of(RESULT, BUDGET)
    body = response_object(SHAPE, "completed", ["searching", RESULT.summary], outcome)
    response = Response.model_validate(body)
    assert response.id == "resp_tree-0001" and tree_id_of(response.id) == "tree-0001"
    assert response.status == "completed" and response.output_text == "105"
    reasoning = response.output[0]
    assert reasoning.type == "reasoning"
    assert [part.text for part in reasoning.summary] == ["searching", RESULT.summary]
    assert response.usage is not None
    assert response.usage.output_tokens_details.reasoning_tokens == 812 == response.usage.output_tokens
    assert response.usage.input_tokens_details.cached_tokens == 256
    assert response.usage.total_tokens == 1112
    extension = (response.reasoning.model_extra or {}) if response.reasoning else {}
    assert extension["tree_id"] == "tree-0001" and extension["budget"]["spent_tokens"] == 812
    assert response.incomplete_details is None and response.error is None


def test_budget_cut_chain_is_incomplete_and_deadline_says_so() -> None:
    cut = outcome_of(SolveResult(**{**_fields(RESULT), "finish_reason": "length"}), BUDGET)
    body = Response.model_validate(response_object(SHAPE, cut.status, [], cut))
    assert body.status == "incomplete" and body.incomplete_details is not None
    assert body.incomplete_details.reason == "max_output_tokens"
    timeout = ApiError(504, "late", type="timeout_error")
    late = Outcome("incomplete", incomplete_reason="deadline", error=timeout)
    data = response_object(SHAPE, "incomplete", ["depth 1"], late)
    assert data["incomplete_details"] == {"reason": "deadline"} and data["error"]["message"] == "late"
    assert [item["type"] for item in data["output"]] == ["reasoning"]


def test_queued_response_has_no_output_yet() -> None:
    body = Response.model_validate(response_object(SHAPE, "queued"))
    assert body.status == "queued" and body.output == [] and body.background is True and body.usage is None


def test_stream_events_are_openai_events_in_sequence() -> None:
    events = ResponseEvents(SHAPE)
    stream = events.started() + events.summary_part("depth 1: explored 2")
    stream += events.summary_part("Answer: 105")
    stream += events.finished(outcome_of(RESULT, BUDGET))
    parsed = [EVENT.validate_python(event) for event in stream]
    assert [event.sequence_number for event in parsed] == list(range(len(stream)))
    types = [event.type for event in parsed]
    assert types[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert types.count("response.reasoning_summary_part.added") == 2
    assert types.index("response.reasoning_summary_text.done") < types.index("response.output_text.delta")
    assert types[-1] == "response.completed"
    deltas = [e.delta for e in parsed if e.type == "response.output_text.delta"]
    assert deltas == ["105"]
    final = parsed[-1].response  # type: ignore[union-attr]
    assert [part.text for part in final.output[0].summary] == ["depth 1: explored 2", "Answer: 105"]
    assert final.output_text == "105"


def test_cancelled_response_ends_with_failed_event_saying_cancelled() -> None:
    events = ResponseEvents(SHAPE, sequence=5)
    (done, last) = events.finished(Outcome("cancelled"))
    assert done["sequence_number"] == 5 and last["sequence_number"] == 6
    assert last["type"] == "response.failed" and last["response"]["status"] == "cancelled"
    frame = sse_event(last).decode()
    assert frame.startswith("event: response.failed\ndata: {") and frame.endswith("\n\n")


def test_summary_detail_levels() -> None:
    steps = path_steps(["Price of one: 45 / 3 = 15.\n\n7 * 15 = 105.\nThe answer is 105."])
    assert steps == ["Price of one: 45 / 3 = 15.", "7 * 15 = 105.", "The answer is 105."]
    concise = final_parts("concise", RESULT, steps, "verified")
    auto = final_parts("auto", RESULT, steps, "verified")
    detailed = final_parts("detailed", RESULT, steps, "verified")
    assert concise == ["Answer: 105 (verified)."]
    assert auto == [RESULT.summary]
    assert detailed[:3] == ["1. Price of one: 45 / 3 = 15.", "2. 7 * 15 = 105.", "3. The answer is 105."]
    assert "812 reasoning tokens" in detailed[-1] and "8 chains" in detailed[-1]
    assert progress_part("concise", PROGRESS) is None
    line = progress_part("auto", PROGRESS)
    assert line is not None and line.startswith("depth 2: explored 6, pruned 1; best: 7 * 15 = 105.")
    full = progress_part("detailed", PROGRESS)
    assert full is not None and full.splitlines()[1:] == ["1. Price of one: 45 / 3 = 15.", "2. 7 * 15 = 105."]


def _fields(result: SolveResult) -> dict[str, Any]:
    return {name: getattr(result, name) for name in result.__slots__}  # type: ignore[attr-defined]
