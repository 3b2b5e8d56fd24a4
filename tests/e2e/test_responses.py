"""The Responses API end to end with the official `openai` client, unchanged: plain, streamed,
background (surviving the gateway replica that accepted it), resumed streams, cancel, delete."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
import ray
from openai import OpenAI
from openai.types.responses import Response

from cluster.local import LocalCluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

QUESTION = "If 3 pencils cost 45 cents, how many cents do 7 pencils cost?"


def _tree(cluster: LocalCluster, tree_id: str) -> dict[str, Any]:
    response = httpx.get(f"{cluster.url}/v1/trees/{tree_id}", timeout=10)
    response.raise_for_status()
    return dict(response.json())


def _extension(response: Response) -> dict[str, Any]:
    assert response.reasoning is not None
    return dict(response.reasoning.model_extra or {})


def _summary(response: Response) -> list[str]:
    (reasoning,) = [item for item in response.output if item.type == "reasoning"]
    return [part.text for part in reasoning.summary]  # type: ignore[union-attr]


def _wait_for(what: str, probe: Callable[[], Any], timeout_s: float = 180) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            found = probe()
        except (openai.APIConnectionError, openai.InternalServerError, httpx.TransportError):
            found = None  # a gateway replica on its way back
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _check_usage_is_the_ledger(cluster: LocalCluster, response: Response) -> dict[str, Any]:
    tree = _tree(cluster, _extension(response)["tree_id"])
    usage = response.usage
    assert usage is not None
    spent = tree["budget"]["spent"]["tokens"]
    assert usage.output_tokens_details.reasoning_tokens == usage.output_tokens == spent > 0
    assert usage.input_tokens > 0 and usage.input_tokens_details.cached_tokens >= 0
    assert tree["budget"]["reserved"]["tokens"] == 0
    return tree


@pytest.mark.parametrize(("effort", "detail"), [("none", "concise"), ("low", "detailed")])
def test_plain_response_with_summary_and_usage_from_the_ledger(
    openai_client: OpenAI, cluster: LocalCluster, effort: str, detail: str
) -> None:
    response = openai_client.responses.create(
        model="default",
        input=QUESTION,
        instructions="Answer with a number.",
        reasoning={"effort": effort, "summary": detail},  # type: ignore[typeddict-item]
        max_output_tokens=64,
        metadata={"ticket": "T-1"},
    )
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status in {"completed", "incomplete"}
    assert response.output_text.strip()
    assert response.metadata == {"ticket": "T-1"}
    if response.status == "incomplete":
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"
    tree = _check_usage_is_the_ledger(cluster, response)
    assert tree["meta"]["effort"] == effort and tree["budget"]["granted"]["tokens"] <= 64
    summary = _summary(response)
    if detail == "concise":
        assert summary == [f"Answer: {_extension(response)['answer']} ({tree['meta']['extra']['reason']})."]
    else:
        assert len(summary) >= 2 and summary[0].startswith("1. ")
        assert f"{response.usage.output_tokens} reasoning tokens" in summary[-1]  # type: ignore[union-attr]
    assert openai_client.responses.retrieve(response.id).model_dump() == response.model_dump()


def test_stream_events_in_order_then_the_answer(openai_client: OpenAI, cluster: LocalCluster) -> None:
    stream = openai_client.responses.create(
        model="default", input=QUESTION, reasoning={"effort": "low"}, max_output_tokens=64, stream=True
    )
    events = list(stream)
    assert [event.sequence_number for event in events] == list(range(len(events)))
    types = [event.type for event in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert "response.reasoning_summary_part.added" in types
    assert types.index("response.reasoning_summary_text.done") < types.index("response.output_text.delta")
    assert types[-1] in {"response.completed", "response.incomplete"}
    final = events[-1].response  # type: ignore[union-attr]
    delta = "".join(e.delta for e in events if e.type == "response.output_text.delta")  # type: ignore[union-attr]
    assert delta == final.output_text and delta.strip()
    _check_usage_is_the_ledger(cluster, final)


def gateway_replicas() -> list[str]:
    return [
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if "#Gateway#" in actor["name"] and actor["name"].startswith("SERVE_REPLICA")
    ]


def test_background_job_survives_its_gateway_and_its_stream_resumes(
    openai_client: OpenAI, cluster: LocalCluster
) -> None:
    queued = openai_client.responses.create(
        model="default", input=QUESTION, reasoning={"effort": "low"}, max_output_tokens=200, background=True
    )
    assert queued.status == "queued" and queued.background is True and queued.output == []
    # Kill the replica that accepted the job (the only one) while the job runs: Serve's
    # controller starts another, and the job, held by the job runner, goes on.
    (accepted_by,) = gateway_replicas()
    assert openai_client.responses.retrieve(queued.id).status in {"queued", "in_progress"}
    ray.kill(ray.get_actor(accepted_by, namespace="serve"), no_restart=True)

    def finished() -> Response | None:
        response = openai_client.responses.retrieve(queued.id)
        return response if response.status not in {"queued", "in_progress"} else None

    done = _wait_for("the background job", finished)
    assert gateway_replicas() and gateway_replicas() != [accepted_by]
    assert done.status in {"completed", "incomplete"} and done.output_text.strip()
    _check_usage_is_the_ledger(cluster, done)
    # The whole stream, then the same stream resumed after an event: the rest, no duplicates.
    every = list(openai_client.responses.retrieve(queued.id, stream=True))
    assert [e.sequence_number for e in every] == list(range(len(every)))
    cut = len(every) // 2
    rest = list(openai_client.responses.retrieve(queued.id, stream=True, starting_after=cut))
    assert [e.sequence_number for e in rest] == list(range(cut + 1, len(every)))
    assert [e.model_dump() for e in rest] == [e.model_dump() for e in every[cut + 1 :]]
    assert every[-1].response.model_dump() == done.model_dump()  # type: ignore[union-attr]


def test_cancel_stops_the_search_and_releases_its_budget(
    openai_client: OpenAI, cluster: LocalCluster
) -> None:
    queued = openai_client.responses.create(
        model="default", input=QUESTION, reasoning={"effort": "high"}, background=True
    )
    tree_id = _extension(queued)["tree_id"]

    def reserving() -> bool:
        return bool(_tree(cluster, tree_id)["budget"]["reserved"].get("tokens", 0) > 0)

    _wait_for("a reservation", reserving, timeout_s=60)
    cancelled = openai_client.responses.cancel(queued.id)
    assert cancelled.status == "cancelled"
    tree = _tree(cluster, tree_id)
    assert tree["meta"]["status"] == "cancelled"
    assert tree["budget"]["reserved"]["tokens"] == 0
    assert tree["budget"]["spent"].get("tokens", 0) < tree["budget"]["granted"]["tokens"]
    assert openai_client.responses.retrieve(queued.id).status == "cancelled"
    # Cancelling again changes nothing; deleting removes it for good.
    assert openai_client.responses.cancel(queued.id).status == "cancelled"
    openai_client.responses.delete(queued.id)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.retrieve(queued.id)


def test_bad_effort_is_a_400_listing_the_scale(cluster: LocalCluster) -> None:
    body = {"model": "default", "input": QUESTION, "reasoning": {"effort": "extreme"}}
    response = httpx.post(f"{cluster.url}/v1/responses", json=body, timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "reasoning"
    for name in ("none", "minimal", "low", "medium", "high", "xhigh"):
        assert f"'{name}'" in error["message"]
