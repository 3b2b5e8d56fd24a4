"""Anytime answers on the real stack: concurrent tree searches all answer within their deadline,
and a search that its budget stops early streams its best candidate, marked incomplete."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from openai import OpenAI

from cluster.local import LocalCluster
from cluster.types import Effort

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PUZZLES = ("4 5 6 10", "1 2 4 7", "2 5 8 11", "3 4 4 13")
# What answering late may add to the deadline: the planner's last writes, HTTP, JSON.
SLACK_S = 15.0


def game24(cluster: LocalCluster, puzzle: str) -> tuple[httpx.Response, float]:
    body = {
        "model": "default",
        "messages": [{"role": "user", "content": puzzle}],
        "reasoning_effort": "medium",
        "task": "game24",
    }
    started = time.monotonic()
    response = httpx.post(f"{cluster.url}/v1/chat/completions", json=body, timeout=600)
    return response, time.monotonic() - started


def test_four_concurrent_medium_searches_all_answer_on_time(cluster: LocalCluster) -> None:
    deadline_s = cluster.config.budget_for(Effort.MEDIUM).deadline_s
    with ThreadPoolExecutor(len(PUZZLES)) as pool:
        results = list(pool.map(lambda puzzle: game24(cluster, puzzle), PUZZLES))
    for response, took_s in results:
        assert response.status_code == 200, response.text
        assert took_s < deadline_s + SLACK_S
        body: dict[str, Any] = response.json()
        reasoning = body["reasoning"]
        assert reasoning["status"] in ("complete", "incomplete")
        assert isinstance(reasoning["verified"], bool)
        if reasoning["status"] == "incomplete":
            assert reasoning["incomplete_reason"] in ("deadline", "budget")
            assert body["choices"][0]["finish_reason"] == "length"
        assert body["choices"][0]["message"]["content"].strip()
        assert reasoning["budget"]["spent_tokens"] <= reasoning["budget"]["granted_tokens"]


def test_a_search_its_budget_stops_early_streams_its_best_candidate(openai_client: OpenAI) -> None:
    stream = openai_client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "4 9 10 13"}],
        reasoning_effort="medium",
        max_completion_tokens=24,
        extra_body={"task": "game24"},
        stream=True,
    )
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    reasoning = (chunks[-1].model_extra or {})["reasoning"]
    assert content.strip()
    assert finish == ["length"]
    assert (reasoning["status"], reasoning["incomplete_reason"], reasoning["verified"]) == (
        "incomplete",
        "budget",
        False,
    )
    assert reasoning["budget"]["spent_tokens"] <= 24
