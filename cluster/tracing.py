"""Request traces: OpenTelemetry spans, exported over OTLP/HTTP when an endpoint is configured.

Each deployment builds one `Tracer` from `config.tracing`. With no endpoint (the default) it
is a no-op: spans cost a context switch and nothing is sent. With one, spans are batched and
posted to `<endpoint>` (an OTLP/HTTP traces URL, e.g. `http://otel-collector:4318/v1/traces`).

A request's trace crosses Ray calls as W3C headers in the request structs' `trace_context`
(`traceparent`, plus `baggage` carrying the tree id): the caller stamps the struct with
`propagate`, the callee continues the trace with `span(..., parent=request.trace_context)`.
Every span of a request carries the tree id as the attribute `rc.tree_id`, taken from the
baggage, so code deep in a call needs no tree id of its own to label its spans.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from opentelemetry import baggage, context, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from cluster.config import TracingConfig

TREE_ID = "rc.tree_id"
COMPONENT = "rc.component"
INSTRUMENTATION = "reasoning-cluster"
AttributeValue = str | bool | int | float

# Stateless: W3C trace context (traceparent, tracestate) and W3C baggage.
_PROPAGATOR = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])


class Traced(Protocol):
    """A request struct (a frozen dataclass) that can carry a trace across a Ray call."""

    @property
    def trace_context(self) -> dict[str, str] | None: ...


T = TypeVar("T", bound=Traced)


class Tracer:
    """Spans of one process (a deployment replica); a no-op unless an endpoint is configured."""

    def __init__(self, config: TracingConfig, component: str, exporter: SpanExporter | None = None) -> None:
        self._provider: TracerProvider | None = None
        self._tracer: trace.Tracer = trace.NoOpTracer()
        if exporter is None and config.endpoint is not None:
            exporter = OTLPSpanExporter(endpoint=config.endpoint, headers=dict(config.headers) or None)
        if exporter is not None:
            resource = Resource.create({"service.name": config.service_name, COMPONENT: component})
            self._provider = TracerProvider(resource=resource)
            self._provider.add_span_processor(
                BatchSpanProcessor(exporter, schedule_delay_millis=config.export_delay_ms)
            )
            self._tracer = self._provider.get_tracer(INSTRUMENTATION)

    @property
    def enabled(self) -> bool:
        return self._provider is not None

    @contextmanager
    def span(
        self,
        name: str,
        *,
        parent: Mapping[str, str] | None = None,
        tree_id: str | None = None,
        attributes: Mapping[str, AttributeValue | None] | None = None,
    ) -> Iterator[Span]:
        """A span, child of `parent` (a propagated trace context) or of the current span.

        `tree_id` labels this span and, through the baggage, every span after it in the trace.
        """
        ctx = _PROPAGATOR.extract(dict(parent)) if parent else context.get_current()
        if tree_id is not None:
            ctx = baggage.set_baggage(TREE_ID, tree_id, ctx)
        labels = {key: value for key, value in (attributes or {}).items() if value is not None}
        tree = baggage.get_baggage(TREE_ID, ctx)
        if tree is not None:
            labels[TREE_ID] = str(tree)
        token = context.attach(ctx)
        try:
            with self._tracer.start_as_current_span(name, attributes=labels) as span:
                yield span
        finally:
            context.detach(token)

    def trace_context(self) -> dict[str, str] | None:
        """The current span's context as W3C headers; None when tracing is off."""
        if not self.enabled:
            return None
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        return carrier or None

    def propagate(self, request: T) -> T:
        """`request` stamped with the current trace context (unchanged when tracing is off)."""
        carried = self.trace_context()
        return request if carried is None else replace(request, trace_context=carried)  # type: ignore[type-var]

    def shutdown(self) -> None:
        """Send what is batched and stop (a replica going away)."""
        if self._provider is not None:
            self._provider.shutdown()


def current_ids() -> dict[str, Any]:
    """Hex trace and span ids of the current span ({} outside one or when tracing is off)."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return {}
    return {
        "trace_id": trace.format_trace_id(span_context.trace_id),
        "span_id": trace.format_span_id(span_context.span_id),
    }
