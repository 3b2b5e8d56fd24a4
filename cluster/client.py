"""Client SDK: sync and async clients over HTTP and gRPC.

`AsyncReasoningClient` (and `ReasoningClient`, the same calls blocking) runs Responses API
jobs over either transport: `respond` (ask and wait), `stream` (ask and watch), `submit`
(background) then `wait`, `follow`, `retrieve` or `cancel`. Every call takes a deadline
(`timeout_s`); a failed call is retried only where that is safe: a request carries one request
id through its retries, and the service answers a repeated id with the same response instead
of starting a second search. Results are typed (`ReasoningResult`, `ReasoningEvent`); errors
are `ReasoningError`s with the service's message.

`ReasoningClient.ask` (the chat API, used by `reasoning-cluster ask` and `eval`), `tree`,
`events` and `follow_tree` read the extension fields (`reasoning`, trees, progress events).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, TypeVar, cast

import httpx
from openai import OpenAI
from openai.types.shared import ReasoningEffort

from cluster.client_transports import (
    GrpcTransport,
    HttpTransport,
    ReasoningError,
    ReasoningEvent,
    ReasoningRequest,
    ReasoningResult,
    TokenUsage,
    Transport,
)

__all__ = [
    "AsyncReasoningClient",
    "ReasoningClient",
    "ReasoningError",
    "ReasoningEvent",
    "ReasoningResult",
    "TokenUsage",
]

LOCAL_URL = "http://127.0.0.1:8000"
LOCAL_GRPC = "127.0.0.1:9000"
# How long stopping a job whose caller gave up may take.
STOP_TIMEOUT_S = 30.0
TransportName = Literal["http", "grpc"]
Input = str | list[dict[str, str]]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ReasoningAnswer:
    answer: str
    summary: str
    tree_id: str
    effort: str
    strategy: str
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cached_tokens: int
    branches: int
    elapsed_s: float
    # `reasoning.status`: complete, or incomplete when a deadline, the budget or an engine
    # failure stopped the search early (`incomplete_reason`) and this is its best answer.
    status: str = "complete"
    incomplete_reason: str | None = None
    # A program verified the answer (not a model's opinion).
    verified: bool = False


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    event_id: str
    kind: str
    data: dict[str, Any]


class AsyncReasoningClient:
    """Responses API jobs over HTTP (`transport="http"`, at `url`) or gRPC (at `grpc_target`)."""

    def __init__(
        self,
        url: str = LOCAL_URL,
        api_key: str = "local",
        *,
        transport: TransportName = "http",
        grpc_target: str = LOCAL_GRPC,
        timeout_s: float = 600.0,
        max_retries: int = 2,
    ) -> None:
        self._transport: Transport = (
            GrpcTransport(grpc_target, api_key, timeout_s)
            if transport == "grpc"
            else HttpTransport(url.rstrip("/"), api_key, timeout_s)
        )
        self._max_retries = max_retries

    async def respond(
        self, input: Input, *, request_id: str | None = None, timeout_s: float | None = None, **options: Any
    ) -> ReasoningResult:
        """Solve and wait for the answer, within `timeout_s` (then: ReasoningError 504).

        It runs as a background job that this call follows, so a dropped connection is resumed
        (or the request retried under its id) without losing or repeating the search; when the
        call is cancelled or its deadline passes, it cancels the job.
        """
        job = await self.submit(input, request_id=request_id, timeout_s=timeout_s, **options)
        try:
            async with asyncio.timeout(timeout_s):
                return await self.wait(job.id)
        except TimeoutError as exc:
            await asyncio.shield(self._stop(job.id))
            raise ReasoningError(
                504, f"no answer within {timeout_s:g} s; response {job.id} was cancelled", "deadline_exceeded"
            ) from exc
        except asyncio.CancelledError:
            await asyncio.shield(self._stop(job.id))
            raise

    async def submit(
        self, input: Input, *, request_id: str | None = None, timeout_s: float | None = None, **options: Any
    ) -> ReasoningResult:
        """Start a background job; it answers at once (`queued`) and the search runs on."""
        request, rid = _request(input, options), request_id or new_request_id()
        return await self._retried(lambda: self._transport.create(request, rid, True, timeout_s))

    async def stream(
        self, input: Input, *, request_id: str | None = None, timeout_s: float | None = None, **options: Any
    ) -> AsyncIterator[ReasoningEvent]:
        """Solve and watch: events as the search goes, the last one (`done`) with the result.
        Leaving the stream early cancels the search."""
        request, rid = _request(input, options), request_id or new_request_id()
        async for event in self._transport.stream(request, rid, False, timeout_s):
            yield event

    async def retrieve(self, response_id: str, *, timeout_s: float | None = None) -> ReasoningResult:
        return await self._retried(lambda: self._transport.retrieve(response_id, timeout_s))

    def follow(self, response_id: str, *, timeout_s: float | None = None) -> AsyncIterator[ReasoningEvent]:
        """A job's events until it ends; leaving does not stop the job."""
        return self._transport.follow(response_id, timeout_s)

    async def wait(self, response_id: str, *, timeout_s: float | None = None) -> ReasoningResult:
        """The job's result once it has ended (following its events; a dropped stream resumes)."""
        async for event in self.follow(response_id, timeout_s=timeout_s):
            if event.result is not None:
                return event.result
        return await self.retrieve(response_id, timeout_s=timeout_s)

    async def cancel(self, response_id: str, *, timeout_s: float | None = None) -> ReasoningResult:
        """Stop the job's search (its reserved budget is released); the job as it ended."""
        return await self._retried(lambda: self._transport.cancel(response_id, timeout_s))

    async def close(self) -> None:
        await self._transport.close()

    async def _stop(self, response_id: str) -> None:
        try:
            await self._transport.cancel(response_id, STOP_TIMEOUT_S)
        except ReasoningError:  # it ended (or went) meanwhile: nothing is left to stop
            return

    async def _retried(self, call: Callable[[], Awaitable[T]]) -> T:
        """Retry transient failures: the call carries the same request id each time."""
        for attempt in range(self._max_retries + 1):
            try:
                return await call()
            except ReasoningError as exc:
                if not exc.transient or attempt == self._max_retries:
                    raise
                await asyncio.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")


def new_request_id() -> str:
    return uuid.uuid4().hex


def _request(input: Input, options: Mapping[str, Any]) -> ReasoningRequest:
    """`options`: effort, summary, task, instructions, max_output_tokens, strategy, seed, metadata."""
    return ReasoningRequest(input=input, **options)


class ReasoningClient:
    """The SDK's calls, blocking (an event loop of its own runs them), plus the chat-API helpers."""

    def __init__(
        self,
        url: str = LOCAL_URL,
        api_key: str = "local",
        timeout_s: float = 600.0,
        *,
        transport: TransportName = "http",
        grpc_target: str = LOCAL_GRPC,
        max_retries: int = 2,
    ) -> None:
        self._url = url.rstrip("/")
        self._api_key = api_key
        self._openai = OpenAI(base_url=f"{self._url}/v1", api_key=api_key, timeout=timeout_s, max_retries=0)
        self._http = httpx.Client(
            base_url=self._url, timeout=30.0, headers={"Authorization": f"Bearer {api_key}"}
        )
        self._make_async = partial(
            AsyncReasoningClient,
            self._url,
            api_key,
            transport=transport,
            grpc_target=grpc_target,
            timeout_s=timeout_s,
            max_retries=max_retries,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async: AsyncReasoningClient | None = None

    def respond(self, input: Input, **options: Any) -> ReasoningResult:
        """Solve and wait; options as `AsyncReasoningClient.respond`."""
        return self._run(lambda sdk: sdk.respond(input, **options))

    def submit(self, input: Input, **options: Any) -> ReasoningResult:
        return self._run(lambda sdk: sdk.submit(input, **options))

    def stream(self, input: Input, **options: Any) -> Iterator[ReasoningEvent]:
        return self._iterate(lambda sdk: sdk.stream(input, **options))

    def retrieve(self, response_id: str, *, timeout_s: float | None = None) -> ReasoningResult:
        return self._run(lambda sdk: sdk.retrieve(response_id, timeout_s=timeout_s))

    def follow(self, response_id: str, *, timeout_s: float | None = None) -> Iterator[ReasoningEvent]:
        return self._iterate(lambda sdk: sdk.follow(response_id, timeout_s=timeout_s))

    def wait(self, response_id: str, *, timeout_s: float | None = None) -> ReasoningResult:
        return self._run(lambda sdk: sdk.wait(response_id, timeout_s=timeout_s))

    def cancel(self, response_id: str, *, timeout_s: float | None = None) -> ReasoningResult:
        return self._run(lambda sdk: sdk.cancel(response_id, timeout_s=timeout_s))

    def _run(self, call: Callable[[AsyncReasoningClient], Coroutine[Any, Any, T]]) -> T:
        loop, sdk = self._sdk()
        return asyncio.run_coroutine_threadsafe(call(sdk), loop).result()

    def _iterate(self, stream: Callable[[AsyncReasoningClient], AsyncIterator[T]]) -> Iterator[T]:
        loop, sdk = self._sdk()
        events = stream(sdk)
        try:
            while True:
                try:
                    yield asyncio.run_coroutine_threadsafe(_next(events), loop).result()
                except StopAsyncIteration:
                    return
        finally:
            # Leaving early closes the stream there (which, for `stream`, cancels the search).
            asyncio.run_coroutine_threadsafe(_close(events), loop).result()

    def _sdk(self) -> tuple[asyncio.AbstractEventLoop, AsyncReasoningClient]:
        """The async client and the loop it lives on (a daemon thread), made on first use."""
        if self._loop is None or self._async is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="reasoning-client", daemon=True).start()

            async def make() -> AsyncReasoningClient:
                return self._make_async()

            self._async = asyncio.run_coroutine_threadsafe(make(), loop).result()
            self._loop = loop
        return self._loop, self._async

    @staticmethod
    def new_request_id() -> str:
        return uuid.uuid4().hex

    def ask(
        self,
        question: str,
        effort: str = "medium",
        *,
        task: str = "general",
        request_id: str | None = None,
        max_completion_tokens: int | None = None,
        strategy: str | None = None,
    ) -> ReasoningAnswer:
        """`strategy` replaces the effort's own search strategy, within the effort's budget."""
        started = time.monotonic()
        response = self._openai.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": question}],
            reasoning_effort=cast(ReasoningEffort, effort),
            max_completion_tokens=max_completion_tokens,
            extra_body={"task": task, "strategy": strategy},
            extra_headers={"X-Request-Id": request_id or self.new_request_id()},
        )
        reasoning = (response.model_extra or {})["reasoning"]
        usage = response.usage
        assert usage is not None
        return ReasoningAnswer(
            answer=response.choices[0].message.content or "",
            summary=reasoning["summary"],
            tree_id=reasoning["tree_id"],
            effort=reasoning["effort"],
            strategy=reasoning["strategy"],
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            reasoning_tokens=_detail(usage.completion_tokens_details, "reasoning_tokens"),
            cached_tokens=_detail(usage.prompt_tokens_details, "cached_tokens"),
            branches=reasoning["branches"],
            elapsed_s=time.monotonic() - started,
            status=reasoning["status"],
            incomplete_reason=reasoning["incomplete_reason"],
            verified=reasoning["verified"],
        )

    def served_model(self) -> str:
        """The name of the model the cluster serves (`root` of GET /v1/models)."""
        return str(self._get("/v1/models")["data"][0]["root"])

    def tree(self, tree_id: str) -> dict[str, Any]:
        return self._get(f"/v1/trees/{tree_id}")

    def events(self, tree_id: str, after: str = "0") -> tuple[str | None, list[ProgressEvent]]:
        """Progress events after `after`; (None, []) while the tree does not exist yet."""
        response = self._http.get(f"/v1/trees/{tree_id}/events", params={"after": after})
        if response.status_code == 404:
            return None, []
        response.raise_for_status()
        body = response.json()
        events = [ProgressEvent(e["id"], e["kind"], e["data"]) for e in body["events"]]
        return body["status"], events

    def follow_tree(self, tree_id: str) -> Iterator[ProgressEvent]:
        """Yield progress events until the tree is no longer running."""
        after = "0"
        while True:
            status, events = self.events(tree_id, after)
            yield from events
            if events:
                after = events[-1].event_id
            if status not in (None, "running"):
                return
            if status is None:
                time.sleep(0.2)

    def health(self) -> dict[str, Any]:
        response = self._http.get("/healthz")
        return response.json()

    def _get(self, path: str) -> dict[str, Any]:
        response = self._http.get(path)
        response.raise_for_status()
        return response.json()

    def close(self) -> None:
        self._http.close()
        self._openai.close()
        if self._loop is not None and self._async is not None:
            asyncio.run_coroutine_threadsafe(self._async.close(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop = self._async = None


async def _next(events: AsyncIterator[T]) -> T:
    return await anext(events)


async def _close(events: AsyncIterator[Any]) -> None:
    close = getattr(events, "aclose", None)
    if close is not None:
        await close()


def _detail(details: object, name: str) -> int:
    value = getattr(details, name, None) if details is not None else None
    return int(value or 0)
