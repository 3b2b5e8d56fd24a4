"""Request validation and response shape of the OpenAI-compatible API."""

from __future__ import annotations

import json

import pytest

from cluster.api import ApiError, BudgetView, chat_completion_body, parse_chat_request
from cluster.search.summary import summarize
from cluster.types import Effort, SolveResult, Usage
from cluster.verifiers.judge import yes_probability

pytestmark = pytest.mark.unit

USER = [{"role": "user", "content": "What is 2 + 3?"}]


def _parse(body: object) -> object:
    return parse_chat_request(json.dumps(body).encode())


def test_valid_request_with_extensions() -> None:
    request = parse_chat_request(
        json.dumps(
            {
                "model": "default",
                "messages": USER,
                "reasoning_effort": "high",
                "task": "math",
                "top_p": 0.9,
                "max_completion_tokens": 64,
            }
        ).encode()
    )
    assert request.reasoning_effort is Effort.HIGH
    assert request.task == "math"
    assert request.completion_cap() == 64


def test_effort_defaults_to_none_so_config_decides() -> None:
    assert (
        parse_chat_request(json.dumps({"model": "default", "messages": USER}).encode()).reasoning_effort
        is None
    )


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (
            {"model": "default", "messages": USER, "reasoning_effort": "max"},
            "one of 'none', 'minimal', 'low', 'medium', 'high', 'xhigh'",
        ),
        ({"model": "default", "messages": []}, "messages"),
        ({"model": "default"}, "messages: Field required"),
        ({"model": "default", "messages": USER, "seed": "1"}, "seed"),
        (
            {"model": "default", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "text content",
        ),
    ],
)
def test_invalid_requests_name_the_field(body: object, fragment: str) -> None:
    with pytest.raises(ApiError) as caught:
        _parse(body)
    assert caught.value.status == 400
    assert fragment in caught.value.message


def test_error_body_is_openai_shaped() -> None:
    error = ApiError(400, "bad", param="messages", code="x")
    assert error.body() == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "messages", "code": "x"}
    }


def test_chat_completion_body_accounts_tokens() -> None:
    result = SolveResult("t1", "105", "105", "1. steps", "best_of_n", Usage(50, 400, 128), 8, 8, ("n0", "n3"))
    body = chat_completion_body(result, "default", Effort.HIGH, BudgetView(2112, 400))
    assert body["usage"] == {
        "prompt_tokens": 50,
        "completion_tokens": 400,
        "total_tokens": 450,
        "completion_tokens_details": {"reasoning_tokens": 400},
        "prompt_tokens_details": {"cached_tokens": 128},
    }
    assert body["reasoning"]["tree_id"] == "t1" and body["reasoning"]["winning_path"] == ["n0", "n3"]
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "105"}


def test_summary_is_short_and_names_the_answer() -> None:
    chain = "\n".join(f"Step {i}: " + "x" * 300 for i in range(10))
    summary = summarize(chain, "42", "3 of 4 agree")
    assert summary.startswith("1. Step 0") and "4. " not in summary
    assert summary.endswith("Answer: 42 (3 of 4 agree).")
    assert len(summary) < 600


def test_judge_reads_yes_against_no() -> None:
    assert yes_probability([(" Yes", -0.1), ("No", -2.4), ("The", -1.0)]) == pytest.approx(0.909, abs=1e-3)
    assert yes_probability([("The", -0.1)]) is None
