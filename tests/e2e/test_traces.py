"""Request traces end to end: one request's spans from the gateway, the planner, every engine
call and every verifier call reach a loopback OTLP/HTTP collector as one trace, each with the
tree id; the tree records its trace id for the explorer."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from cluster.local import LocalCluster
from cluster.tracing import TREE_ID
from tests.otlp import Collector, ReceivedSpan

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXPORT_WAIT_S = 60.0
NAMES = {"gateway.search", "planner.solve", "engine.generate", "verifier.verify"}


def spans_of(collector: Collector, tree_id: str) -> list[ReceivedSpan]:
    return [span for span in collector.spans() if span.attributes.get(TREE_ID) == tree_id]


def test_a_request_is_one_trace_across_every_deployment(
    cluster: LocalCluster, trace_collector: Collector
) -> None:
    request_id = f"traced-{uuid.uuid4().hex[:12]}"
    response = httpx.post(
        f"{cluster.url}/v1/chat/completions",
        json={
            "model": "default",
            "messages": [{"role": "user", "content": "4 9 10 13"}],
            "reasoning_effort": "medium",
            "task": "game24",
            "max_completion_tokens": 120,
        },
        headers={"X-Request-Id": request_id},
        timeout=300,
    )
    assert response.status_code == 200, response.text
    # Spans carry the tree's id: the request id in the caller's namespace, as the response says.
    tree_id = response.json()["reasoning"]["tree_id"]
    tree = httpx.get(f"{cluster.url}/v1/trees/{tree_id}", timeout=30).json()
    spent = tree["budget"]["spent"]["tokens"]
    assert spent == response.json()["usage"]["completion_tokens"]

    def complete(spans: list[ReceivedSpan]) -> bool:
        # Every deployment's span, and an engine span for every token the ledger counted.
        engine_tokens = sum(
            s.attributes["gen_ai.usage.output_tokens"] for s in spans if s.name == "engine.generate"
        )
        return {s.name for s in spans} >= NAMES and engine_tokens == spent

    deadline = time.monotonic() + EXPORT_WAIT_S
    while not complete(spans_of(trace_collector, tree_id)):
        assert time.monotonic() < deadline, spans_of(trace_collector, tree_id)
        time.sleep(0.5)
    spans = spans_of(trace_collector, tree_id)
    (gateway,) = [s for s in spans if s.name == "gateway.search"]
    (planner,) = [s for s in spans if s.name == "planner.solve"]
    assert {s.trace_id for s in spans} == {gateway.trace_id}
    assert planner.parent_span_id == gateway.span_id
    by_id = {s.span_id: s for s in spans}
    for span in spans:
        if span.name in {"engine.generate", "verifier.verify"}:
            # Engine calls come from the planner or from the verifier's model judge.
            assert by_id[span.parent_span_id].name in {"planner.solve", "verifier.verify"}, span
    components = {s.name: s.resource["rc.component"] for s in spans}
    assert components == {
        "gateway.search": "gateway",
        "planner.solve": "planner",
        "engine.generate": "branch_generator",
        "verifier.verify": "verifier",
    }
    assert planner.attributes["rc.strategy"] == response.json()["reasoning"]["strategy"]
    assert tree["meta"]["extra"]["trace_id"] == gateway.trace_id
