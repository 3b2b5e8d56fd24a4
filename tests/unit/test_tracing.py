"""Request traces: spans nest across a propagated context, carry the tree id, are off by default,
and a real OTLP/HTTP export reaches a loopback collector."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import ValidationError

from cluster.config import TracingConfig, load_config
from cluster.tracing import TREE_ID, Tracer, current_ids
from cluster.types import ChatMessage, GenerationRequest, Problem, VerifyRequest
from tests.otlp import Collector, otlp_collector

pytestmark = pytest.mark.unit

ON = TracingConfig(endpoint="http://127.0.0.1:1/v1/traces", export_delay_ms=50)


def test_a_trace_crosses_a_propagated_request_with_its_tree_id() -> None:
    # Two processes' tracers: the gateway's and the engine's.
    exporters = InMemorySpanExporter(), InMemorySpanExporter()
    gateway, engine = Tracer(ON, "gateway", exporters[0]), Tracer(ON, "branch_generator", exporters[1])
    with gateway.span("gateway.search", tree_id="tree-1", attributes={"rc.effort": "high"}) as outer:
        request = gateway.propagate(GenerationRequest(prompt="p", n=2, max_tokens=8, temperature=0.0))
    assert request.trace_context is not None and "traceparent" in request.trace_context
    # The callee runs elsewhere: no current span, only the request's context.
    with engine.span("engine.generate", parent=request.trace_context, attributes={"rc.n": request.n}):
        pass
    for tracer in (gateway, engine):
        tracer.shutdown()
    spans = {span.name: span for exporter in exporters for span in exporter.get_finished_spans()}
    assert set(spans) == {"gateway.search", "engine.generate"}
    parent, child = spans["gateway.search"], spans["engine.generate"]
    assert child.context.trace_id == parent.context.trace_id == outer.get_span_context().trace_id
    assert child.parent is not None and child.parent.span_id == parent.context.span_id
    assert parent.attributes[TREE_ID] == child.attributes[TREE_ID] == "tree-1"
    assert child.attributes["rc.n"] == 2 and parent.attributes["rc.effort"] == "high"
    assert child.resource.attributes["rc.component"] == "branch_generator"
    assert parent.resource.attributes["service.name"] == "reasoning-cluster"


def test_nested_spans_in_one_process_need_no_context_passing() -> None:
    exporter = InMemorySpanExporter()
    tracer = Tracer(ON, "planner", exporter)
    with tracer.span("planner.solve", tree_id="tree-2") as outer:
        ids = current_ids()
        with tracer.span("inner"):
            pass
    tracer.shutdown()
    inner = next(s for s in exporter.get_finished_spans() if s.name == "inner")
    assert inner.parent is not None and inner.parent.span_id == outer.get_span_context().span_id
    assert inner.attributes[TREE_ID] == "tree-2"
    assert ids["span_id"] == f"{outer.get_span_context().span_id:016x}"
    assert current_ids() == {}


def test_tracing_is_off_by_default() -> None:
    config = load_config()
    assert config.tracing.endpoint is None
    tracer = Tracer(config.tracing, "gateway")
    assert not tracer.enabled
    problem = Problem((ChatMessage("user", "2+2?"),))
    request = VerifyRequest(problem, (), ("arithmetic",))
    with tracer.span("gateway.search", tree_id="t"):
        assert tracer.propagate(request) is request
        assert tracer.trace_context() is None
        assert current_ids() == {}


@pytest.mark.parametrize("endpoint", ["collector:4318", "grpc://collector:4317"])
def test_an_endpoint_must_be_an_http_url(endpoint: str) -> None:
    with pytest.raises(ValidationError, match="OTLP/HTTP URL"):
        TracingConfig(endpoint=endpoint)


# ---- a real OTLP/HTTP export ------------------------------------------------------------------


@pytest.fixture
def collector() -> Iterator[Collector]:
    with otlp_collector() as running:
        yield running


def test_spans_are_exported_over_otlp_http(collector: Collector) -> None:
    config = TracingConfig(endpoint=collector.url, headers={"x-api-key": "k1"}, export_delay_ms=50)
    tracer = Tracer(config, "planner")
    with tracer.span("planner.solve", tree_id="tree-3", attributes={"rc.effort": "low"}):
        pass
    assert collector.arrived.wait(10), "no export reached the collector"
    tracer.shutdown()
    [span] = collector.spans()
    assert span.name == "planner.solve" and span.attributes == {TREE_ID: "tree-3", "rc.effort": "low"}
    assert span.resource["service.name"] == "reasoning-cluster"
    assert span.resource["rc.component"] == "planner"
    assert len(span.trace_id) == 32 and len(span.span_id) == 16 and span.parent_span_id == ""
    assert collector.headers[0]["x-api-key"] == "k1"
