"""The local cluster end to end, called the way users call it: the official openai client."""

from __future__ import annotations

import itertools
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from openai import OpenAI

from cluster.local import LocalCluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

QUESTION = "If 3 pencils cost 45 cents, how many cents do 7 pencils cost?"
EFFORTS = ("low", "medium", "high")


def _reasoning(response: Any) -> dict[str, Any]:
    return dict((response.model_extra or {})["reasoning"])


@pytest.fixture(scope="module")
def answers(openai_client: OpenAI) -> dict[str, Any]:
    """One answer per effort, shared by the tests that inspect them."""
    return {
        effort: openai_client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": QUESTION}],
            reasoning_effort=effort,  # type: ignore[arg-type]
            seed=7,
        )
        for effort in EFFORTS
    }


def test_models_lists_default_and_configured_model(openai_client: OpenAI, cluster: LocalCluster) -> None:
    ids = [model.id for model in openai_client.models.list()]
    assert ids == ["default", cluster.config.model.name]


@pytest.mark.parametrize("effort", EFFORTS)
def test_each_effort_answers_with_usage_and_summary(answers: dict[str, Any], effort: str) -> None:
    response = answers[effort]
    reasoning = _reasoning(response)
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].message.content.strip()
    assert reasoning["effort"] == effort
    assert (
        reasoning["strategy"]
        == {"low": "single_chain", "medium": "beam_search", "high": "compute_optimal"}[effort]
    )
    assert reasoning["summary"]
    usage = response.usage
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens_details.reasoning_tokens == usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert reasoning["budget"]["spent_tokens"] == usage.completion_tokens
    assert reasoning["budget"]["spent_tokens"] <= reasoning["budget"]["granted_tokens"]


def test_reasoning_tokens_grow_with_effort(answers: dict[str, Any]) -> None:
    tokens = [answers[e].usage.completion_tokens_details.reasoning_tokens for e in EFFORTS]
    branches = [_reasoning(answers[e])["branches"] for e in EFFORTS]
    assert branches[0] == 1 and branches[1] > 1 and branches[2] > 1
    assert tokens[0] < tokens[1] and tokens[0] < tokens[2], tokens


@pytest.mark.parametrize("effort", EFFORTS)
def test_tree_is_stored_and_consistent_with_usage(
    answers: dict[str, Any], cluster: LocalCluster, effort: str
) -> None:
    response = answers[effort]
    reasoning = _reasoning(response)
    tree = httpx.get(f"{cluster.url}/v1/trees/{reasoning['tree_id']}", timeout=10).json()
    nodes = {node["node_id"]: node for node in tree["nodes"]}
    root, *chains = sorted(nodes.values(), key=lambda n: n["depth"])
    assert root["parent_id"] is None and all(nodes[c["parent_id"]]["depth"] == c["depth"] - 1 for c in chains)
    assert len(chains) == reasoning["branches"]
    judge_tokens = int(tree["meta"]["extra"]["verifier_completion_tokens"])
    assert sum(c["completion_tokens"] for c in chains) + judge_tokens == response.usage.completion_tokens
    assert tree["meta"]["status"] == "done"
    assert tree["winning_path"] == reasoning["winning_path"]
    path = tree["winning_path"]
    assert path[0] == root["node_id"]
    assert all(nodes[child]["parent_id"] == parent for parent, child in itertools.pairwise(path))
    assert all(nodes[node_id]["status"] == "won" for node_id in path)
    assert tree["budget"]["spent"]["tokens"] == response.usage.completion_tokens
    assert tree["budget"]["reserved"]["tokens"] == 0


def test_high_effort_scores_chains_with_verifiers(answers: dict[str, Any], cluster: LocalCluster) -> None:
    tree = httpx.get(f"{cluster.url}/v1/trees/{_reasoning(answers['high'])['tree_id']}", timeout=10).json()
    probe = [n for n in tree["nodes"] if n["depth"] == 1][:3]
    assert all(c["score"] is not None for c in probe)
    assert any("judge" in c["scores"] for c in probe)
    assert tree["meta"]["extra"]["difficulty"] in {"easy", "medium", "hard"}
    assert tree["meta"]["extra"]["choice_reason"]
    finished = [n for n in tree["nodes"] if n["status"] in {"answer", "won"} and n["score"] is not None]
    winner = next(n for n in tree["nodes"] if n["node_id"] == tree["winning_path"][-1])
    if winner["answer"] is not None:
        assert winner["score"] == max(n["score"] for n in finished if n["answer"] is not None)


def test_completion_cap_lowers_the_budget(openai_client: OpenAI) -> None:
    response = openai_client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": QUESTION}],
        reasoning_effort="high",
        max_completion_tokens=100,
    )
    assert 0 < response.usage.completion_tokens <= 100
    assert _reasoning(response)["budget"]["granted_tokens"] == 100


def test_health_reports_every_part(cluster: LocalCluster) -> None:
    response = httpx.get(f"{cluster.url}/healthz", timeout=30)
    body = response.json()
    assert response.status_code == 200, body
    assert set(body["checks"]) == {"redis", "planner", "branch_generator", "verifier", "job_runner"}
    assert all(check["status"] == "ok" for check in body["checks"].values())
    assert body["checks"]["branch_generator"]["device"] == "cpu"


def test_unknown_tree_is_404(cluster: LocalCluster) -> None:
    response = httpx.get(f"{cluster.url}/v1/trees/does-not-exist", timeout=10)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


def test_game24_task_is_verified_exactly(openai_client: OpenAI, cluster: LocalCluster) -> None:
    response = openai_client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "4 9 10 13"}],
        reasoning_effort="high",
        extra_body={"task": "game24"},
    )
    tree = httpx.get(f"{cluster.url}/v1/trees/{_reasoning(response)['tree_id']}", timeout=10).json()
    scored = [n for n in tree["nodes"] if n["score"] is not None]
    assert scored
    # Programs judge every game24 answer and step, so the model judge is never asked.
    assert all("judge" not in n["scores"] for n in scored)
    assert all("game24" in n["scores"] for n in scored if n["answer"] is not None)
    steps = [n for n in scored if n["answer"] is None and n["status"] != "answer"]
    assert all("game24_steps" in n["scores"] for n in steps)


def test_ask_command_prints_answer_summary_usage_and_time(cluster: LocalCluster) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "ask", QUESTION, "--effort", "low", "--url", cluster.url],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    for label in ("Answer:", "Summary:", "Usage:", "Time:", "Tree:"):
        assert label in result.stdout, result.stdout
    assert "thinking..." in result.stderr


def test_concurrent_requests_are_independent(cluster: LocalCluster, openai_client: OpenAI) -> None:
    """A bad request in the middle of good ones harms neither; each good one gets its own tree."""

    def good(effort: str) -> Any:
        return openai_client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": QUESTION}],
            reasoning_effort=effort,  # type: ignore[arg-type]
        )

    def bad() -> int:
        body = {"model": "default", "messages": [{"role": "user", "content": QUESTION}], "n": 2}
        return httpx.post(f"{cluster.url}/v1/chat/completions", json=body, timeout=60).status_code

    with ThreadPoolExecutor(max_workers=3) as pool:
        low, medium = pool.submit(good, "low"), pool.submit(good, "medium")
        rejected = pool.submit(bad)
        responses = [low.result(timeout=300), medium.result(timeout=300)]
    assert rejected.result() == 400
    tree_ids = {_reasoning(r)["tree_id"] for r in responses}
    assert len(tree_ids) == 2
    low_branches, medium_branches = (_reasoning(r)["branches"] for r in responses)
    assert low_branches == 1 and medium_branches > 1
