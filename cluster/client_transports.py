"""The SDK's two transports: HTTP (the Responses API through the official `openai` client) and
gRPC (`reasoning.v1.Reasoning` through `grpcio`). Both speak in the SDK's typed results and
raise `ReasoningError`, marked `transient` where a retry with the same request id is safe.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import openai
from openai import AsyncOpenAI

from cluster.rpc import reasoning_pb2 as pb
from cluster.rpc.messages import STATUS_CODES
from cluster.rpc.reasoning_pb2_grpc import ReasoningStub

FINAL_STATUSES = frozenset({"completed", "incomplete", "failed", "cancelled"})
# HTTP statuses (and gRPC codes) after which the same request may be sent again.
TRANSIENT_STATUSES = frozenset({502, 503})
# The HTTP status of a gRPC code (RESOURCE_EXHAUSTED reads as 429, the later entry).
# How often in a row an HTTP event stream that broke off is resumed.
FOLLOW_RESUMES = 5
_HTTP_STATUS = {code: status for status, code in STATUS_CODES.items()}


class ReasoningError(Exception):
    """An error the service answered with (or a transport failure), with the API's message."""

    def __init__(self, status: int, message: str, code: str | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.transient = transient


@dataclass(frozen=True, slots=True)
class TokenUsage:
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    reasoning_tokens: int


@dataclass(frozen=True, slots=True)
class ReasoningResult:
    """A response: `status` is queued or in_progress until it is final (`done`)."""

    id: str
    status: str
    answer: str
    summary: tuple[str, ...]
    tree_id: str
    effort: str
    strategy: str
    usage: TokenUsage | None
    incomplete_reason: str | None = None
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass(frozen=True, slots=True)
class ReasoningEvent:
    """One event of a response's stream.

    kind: `progress` (a search event: gRPC streams the tree's events), `summary` (a summary
    part: the HTTP stream's reasoning summary), `answer`, or `done` (the last, with `result`).
    """

    sequence_number: int
    kind: str
    text: str = ""
    result: ReasoningResult | None = None


@dataclass(frozen=True, slots=True)
class ReasoningRequest:
    """What to solve and how hard to think; `input` is a string or chat messages."""

    input: str | list[dict[str, str]]
    effort: str | None = None
    summary: str | None = None
    task: str = "general"
    instructions: str | None = None
    max_output_tokens: int | None = None
    strategy: str | None = None
    seed: int | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


class Transport(Protocol):
    async def create(
        self, request: ReasoningRequest, request_id: str, background: bool, timeout_s: float | None
    ) -> ReasoningResult: ...

    def stream(
        self, request: ReasoningRequest, request_id: str, background: bool, timeout_s: float | None
    ) -> AsyncIterator[ReasoningEvent]: ...

    async def retrieve(self, response_id: str, timeout_s: float | None) -> ReasoningResult: ...

    def follow(self, response_id: str, timeout_s: float | None) -> AsyncIterator[ReasoningEvent]: ...

    async def cancel(self, response_id: str, timeout_s: float | None) -> ReasoningResult: ...

    async def close(self) -> None: ...


# ---- HTTP ------------------------------------------------------------------------------------


class HttpTransport:
    def __init__(self, url: str, api_key: str, timeout_s: float) -> None:
        self._openai = AsyncOpenAI(base_url=f"{url}/v1", api_key=api_key, timeout=timeout_s, max_retries=0)

    async def create(
        self, request: ReasoningRequest, request_id: str, background: bool, timeout_s: float | None
    ) -> ReasoningResult:
        with _http_errors():
            response = await self._openai.responses.create(
                **_http_body(request, background),
                extra_headers={"X-Request-Id": request_id},
                timeout=timeout_s,
            )
        return _result(response.model_dump())

    async def stream(
        self, request: ReasoningRequest, request_id: str, background: bool, timeout_s: float | None
    ) -> AsyncIterator[ReasoningEvent]:
        with _http_errors():
            events = await self._openai.responses.create(
                **_http_body(request, background),
                stream=True,
                extra_headers={"X-Request-Id": request_id},
                timeout=timeout_s,
            )
            # Leaving early closes the connection, which cancels a plain (not background) search.
            async with events:
                async for event in events:
                    mapped = _http_event(event.model_dump())
                    if mapped is not None:
                        yield mapped

    async def retrieve(self, response_id: str, timeout_s: float | None) -> ReasoningResult:
        with _http_errors():
            response = await self._openai.responses.retrieve(response_id, timeout=timeout_s)
        return _result(response.model_dump())

    async def follow(self, response_id: str, timeout_s: float | None) -> AsyncIterator[ReasoningEvent]:
        """The response's events, resumed after the last one seen if the connection drops
        (up to FOLLOW_RESUMES times in a row)."""
        after = -1
        failures = 0
        while True:
            try:
                with _http_errors():
                    events = await self._openai.responses.retrieve(
                        response_id, stream=True, starting_after=after, timeout=timeout_s
                    )
                    async with events:
                        async for event in events:
                            after, failures = event.sequence_number, 0
                            mapped = _http_event(event.model_dump())
                            if mapped is not None:
                                yield mapped
                                if mapped.kind == "done":
                                    return
                return
            except ReasoningError as exc:
                failures += 1
                if not exc.transient or failures > FOLLOW_RESUMES:
                    raise
                await asyncio.sleep(0.5 * 2**failures)

    async def cancel(self, response_id: str, timeout_s: float | None) -> ReasoningResult:
        with _http_errors():
            response = await self._openai.responses.cancel(response_id, timeout=timeout_s)
        return _result(response.model_dump())

    async def close(self) -> None:
        await self._openai.close()


def _http_body(request: ReasoningRequest, background: bool) -> dict[str, Any]:
    reasoning = {k: v for k, v in {"effort": request.effort, "summary": request.summary}.items() if v}
    extra = {"task": request.task, "strategy": request.strategy, "seed": request.seed}
    body: dict[str, Any] = {
        "model": "default",
        "input": request.input,
        "reasoning": reasoning,
        "background": background,
        "metadata": dict(request.metadata) or None,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "extra_body": {k: v for k, v in extra.items() if v is not None},
    }
    return {k: v for k, v in body.items() if v is not None}


@contextmanager
def _http_errors() -> Iterator[None]:
    """Turns the openai client's exceptions into ReasoningErrors."""
    try:
        yield
    except openai.APIStatusError as exc:
        error = exc.body.get("error", exc.body) if isinstance(exc.body, dict) else {}
        message = error.get("message", exc.message) if isinstance(error, dict) else exc.message
        code = error.get("code") if isinstance(error, dict) else None
        transient = exc.status_code in TRANSIENT_STATUSES
        raise ReasoningError(exc.status_code, str(message), code, transient) from exc
    except openai.APITimeoutError as exc:
        raise ReasoningError(504, "the call's deadline passed", "deadline_exceeded") from exc
    except openai.APIConnectionError as exc:
        raise ReasoningError(503, f"cannot reach the service: {exc}", "unavailable", transient=True) from exc


def _result(response: Mapping[str, Any]) -> ReasoningResult:
    """A Response object (the HTTP API's JSON) as a ReasoningResult."""
    reasoning = response.get("reasoning") or {}
    output = response.get("output") or []
    summary = tuple(
        part["text"]
        for item in output
        if item.get("type") == "reasoning"
        for part in item.get("summary") or []
    )
    answer = "".join(
        part.get("text", "")
        for item in output
        if item.get("type") == "message"
        for part in item.get("content") or []
    )
    usage = response.get("usage")
    error = response.get("error")
    return ReasoningResult(
        id=response["id"],
        status=response["status"],
        answer=answer,
        summary=summary,
        tree_id=reasoning.get("tree_id", ""),
        effort=reasoning.get("effort", ""),
        strategy=reasoning.get("strategy", ""),
        usage=TokenUsage(
            usage["input_tokens"],
            usage["input_tokens_details"]["cached_tokens"],
            usage["output_tokens"],
            usage["output_tokens_details"]["reasoning_tokens"],
        )
        if usage
        else None,
        incomplete_reason=(response.get("incomplete_details") or {}).get("reason"),
        error=error.get("message") if error else None,
    )


def _http_event(event: Mapping[str, Any]) -> ReasoningEvent | None:
    kind = event.get("type")
    number = int(event.get("sequence_number", 0))
    if kind == "response.reasoning_summary_text.done":
        return ReasoningEvent(number, "summary", event["text"])
    if kind == "response.output_text.done":
        return ReasoningEvent(number, "answer", event["text"])
    if kind in {"response.completed", "response.incomplete", "response.failed"}:
        return ReasoningEvent(number, "done", result=_result(event["response"]))
    if kind == "error":
        raise ReasoningError(500, str(event.get("message")), event.get("code"))
    return None


# ---- gRPC ------------------------------------------------------------------------------------


class GrpcTransport:
    def __init__(self, target: str, api_key: str, timeout_s: float) -> None:
        self._target = target
        self._metadata = (("authorization", f"Bearer {api_key}"),)
        self._timeout_s = timeout_s
        self._channel: grpc.aio.Channel | None = None

    def _stub(self) -> ReasoningStub:
        # grpc.aio channels belong to the event loop they are made on: make it on first use.
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self._target)
        return ReasoningStub(self._channel)

    async def create(
        self, request: ReasoningRequest, request_id: str, background: bool, timeout_s: float | None
    ) -> ReasoningResult:
        with _grpc_errors():
            response = await self._stub().Reason(
                _grpc_request(request, request_id, background), **self._call(timeout_s)
            )
        return _grpc_result(response)

    async def stream(
        self, request: ReasoningRequest, request_id: str, background: bool, timeout_s: float | None
    ) -> AsyncIterator[ReasoningEvent]:
        message = _grpc_request(request, request_id, background)
        async for event in _grpc_events(self._stub().ReasonStream(message, **self._call(timeout_s))):
            yield event

    async def retrieve(self, response_id: str, timeout_s: float | None) -> ReasoningResult:
        with _grpc_errors():
            response = await self._stub().GetResponse(
                pb.ResponseRequest(id=response_id), **self._call(timeout_s)
            )
        return _grpc_result(response)

    async def follow(self, response_id: str, timeout_s: float | None) -> AsyncIterator[ReasoningEvent]:
        call = self._stub().FollowResponse(pb.ResponseRequest(id=response_id), **self._call(timeout_s))
        async for event in _grpc_events(call):
            yield event

    async def cancel(self, response_id: str, timeout_s: float | None) -> ReasoningResult:
        with _grpc_errors():
            response = await self._stub().Cancel(pb.CancelRequest(id=response_id), **self._call(timeout_s))
        return _grpc_result(response)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    def _call(self, timeout_s: float | None) -> dict[str, Any]:
        timeout = timeout_s if timeout_s is not None else self._timeout_s
        return {"metadata": self._metadata, "timeout": timeout}


def _grpc_request(request: ReasoningRequest, request_id: str, background: bool) -> pb.ReasonRequest:
    message = pb.ReasonRequest(
        effort=request.effort or "",
        summary=request.summary or "",
        task=request.task,
        instructions=request.instructions or "",
        max_output_tokens=request.max_output_tokens or 0,
        strategy=request.strategy or "",
        metadata=dict(request.metadata),
        request_id=request_id,
        background=background,
        seed=request.seed,
    )
    if isinstance(request.input, str):
        message.input = request.input
    else:
        message.messages.extend(pb.Message(role=m["role"], content=m["content"]) for m in request.input)
    return message


@contextmanager
def _grpc_errors() -> Iterator[None]:
    """Turns grpc's errors into ReasoningErrors with the HTTP status of their code."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        transient = code is grpc.StatusCode.UNAVAILABLE
        status = _HTTP_STATUS.get(code, 500)
        raise ReasoningError(status, exc.details() or code.name, code.name.lower(), transient) from exc


def _grpc_result(response: pb.ReasonResponse) -> ReasoningResult:
    usage = response.usage if response.HasField("usage") else None
    return ReasoningResult(
        id=response.id,
        status=response.status,
        answer=response.answer,
        summary=tuple(response.summary),
        tree_id=response.tree_id,
        effort=response.effort,
        strategy=response.strategy,
        usage=TokenUsage(usage.input_tokens, usage.cached_tokens, usage.output_tokens, usage.reasoning_tokens)
        if usage is not None
        else None,
        incomplete_reason=response.incomplete_reason or None,
        error=response.error.message if response.HasField("error") else None,
    )


async def _grpc_events(call: Any) -> AsyncIterator[ReasoningEvent]:
    """A server stream's events; the call is cancelled when the reader stops early."""
    try:
        with _grpc_errors():
            async for event in call:
                yield _grpc_event(event)
    finally:
        call.cancel()


def _grpc_event(event: pb.ReasonEvent) -> ReasoningEvent:
    if event.WhichOneof("event") == "response":
        return ReasoningEvent(event.sequence_number, "done", result=_grpc_result(event.response))
    progress = event.progress
    return ReasoningEvent(event.sequence_number, "progress", progress.text, None)
