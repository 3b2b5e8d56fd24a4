"""The OpenAI Responses API, the subset this service serves: request schema, response objects
and the stream's events.

A response is one search. Its object has a `reasoning` output item whose summary parts say
how the search went (one part each time the best path changed, at the requested detail) and
end with the winning path's summary, then a `message` item with the answer. The same
builders serve `POST /v1/responses`, `GET /v1/responses/{id}` and the stream, so what a
client accumulates from the events is what it retrieves afterwards.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cluster.api import (
    MIN_COMPLETION_TOKENS,
    ApiError,
    BudgetView,
    MessageIn,
    ProblemFields,
    effort_field,
    json_object,
    validation_error,
)
from cluster.streaming import describe_event
from cluster.types import ChatMessage, Effort, SolveResult, Usage

SummaryDetail = Literal["auto", "concise", "detailed"]
ResponseStatus = Literal["queued", "in_progress", "completed", "incomplete", "failed", "cancelled"]
FINAL_STATUSES: frozenset[str] = frozenset({"completed", "incomplete", "failed", "cancelled"})
# incomplete_details.reason: OpenAI's name for a search the token budget ended, and ours for
# one the effort's deadline ended.
# OpenAI's name for a spent budget, and this service's other reasons a search stops early.
IncompleteReason = Literal["max_output_tokens", "deadline", "error", "cancelled"]
_INCOMPLETE_REASONS: dict[str, IncompleteReason] = {
    "budget": "max_output_tokens",
    "deadline": "deadline",
    "error": "error",
    "cancelled": "cancelled",
}
# OpenAI's limits on metadata: 16 pairs, keys up to 64 characters, values up to 512.
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
# A step of the winning path in a detailed summary is cut to this many characters.
DETAILED_STEP_CHARS = 400
RESPONSE_ID_PREFIX = "resp_"


class InputMessage(MessageIn):
    """One item of `input` as a list: an easy input message (`type` defaults to "message")."""

    model_config = ConfigDict(extra="ignore", strict=True)
    text_part_types: ClassVar[frozenset[str]] = frozenset({"input_text", "output_text", "text"})
    text_parts_named: ClassVar[str] = "text content parts (input_text)"

    type: Literal["message"] = "message"


class ReasoningOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    effort: Effort | None = None
    summary: SummaryDetail | None = None

    @field_validator("effort", mode="before")
    @classmethod
    def _effort(cls, value: object) -> object:
        return effort_field("reasoning.effort", value)

    @field_validator("summary", mode="before")
    @classmethod
    def _summary(cls, value: object) -> object:
        allowed = get_args(SummaryDetail)
        if value is None or value in allowed:
            return value
        raise ValueError(f"reasoning.summary must be one of {', '.join(map(repr, allowed))}; got {value!r}")


class ResponseCreateRequest(ProblemFields):
    """The body of `POST /v1/responses`; fields this service does not use are ignored."""

    model: str
    input: str | list[InputMessage]
    instructions: str | None = None
    reasoning: ReasoningOptions | None = None
    max_output_tokens: int | None = Field(default=None, ge=MIN_COMPLETION_TOKENS)
    stream: bool = False
    background: bool = False
    store: bool = True
    metadata: dict[str, str] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if len(value) > MAX_METADATA_PAIRS:
            raise ValueError(f"metadata holds at most {MAX_METADATA_PAIRS} pairs; got {len(value)}")
        for key, text in value.items():
            if len(key) > MAX_METADATA_KEY or len(text) > MAX_METADATA_VALUE:
                raise ValueError(
                    f"metadata keys are at most {MAX_METADATA_KEY} characters and values at most "
                    f"{MAX_METADATA_VALUE}; {key[:MAX_METADATA_KEY]!r} is longer"
                )
        return value

    @model_validator(mode="after")
    def _background_is_stored(self) -> ResponseCreateRequest:
        if self.background and not self.store:
            raise ValueError("background responses are stored: drop store: false or background: true")
        return self

    @property
    def reasoning_effort(self) -> Effort | None:
        return self.reasoning.effort if self.reasoning is not None else None

    @property
    def summary_detail(self) -> SummaryDetail:
        """The summary's detail; `auto` when none was asked for (this service always summarises)."""
        chosen = self.reasoning.summary if self.reasoning is not None else None
        return chosen or "auto"

    def chat_messages(self) -> tuple[ChatMessage, ...]:
        """`instructions` as the system message, then the input as chat messages."""
        system = (ChatMessage("system", self.instructions),) if self.instructions else ()
        if isinstance(self.input, str):
            return (*system, ChatMessage("user", self.input))
        # OpenAI's "developer" role is what older templates call "system".
        items = tuple(
            ChatMessage("system" if m.role == "developer" else m.role, m.text()) for m in self.input
        )
        return (*system, *items)

    def completion_cap(self) -> int | None:
        return self.max_output_tokens

    def digest(self) -> str:
        """Identifies the request's content: a retry with the same request id must match it."""
        canonical = self.model_dump(mode="json", exclude={"stream"})
        return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def parse_response_request(raw: bytes) -> ResponseCreateRequest:
    """Parse and validate a `POST /v1/responses` body; every failure is a 400 naming the field."""
    payload = json_object(raw)
    try:
        request = ResponseCreateRequest.model_validate(payload)
        messages = request.chat_messages()
    except ValidationError as exc:
        raise validation_error(exc) from exc
    except ValueError as exc:
        raise ApiError(400, f"input: {exc}", param="input") from exc
    if not any(m.role == "user" and m.content.strip() for m in messages):
        raise ApiError(
            400, "input must be a non-empty string or contain a user message with text", param="input"
        )
    return request


def response_id(tree_id: str) -> str:
    return RESPONSE_ID_PREFIX + tree_id


def tree_id_of(response_id_: str) -> str | None:
    """The tree id inside a response id; None for ids this service never hands out."""
    if not response_id_.startswith(RESPONSE_ID_PREFIX):
        return None
    return response_id_.removeprefix(RESPONSE_ID_PREFIX) or None


@dataclass(frozen=True, slots=True)
class ResponseShape:
    """What a response echoes of its request, fixed when it is created."""

    tree_id: str
    model: str
    effort: Effort
    summary: SummaryDetail
    background: bool
    created_at: float = field(default_factory=time.time)
    instructions: str | None = None
    max_output_tokens: int | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def response_id(self) -> str:
        return response_id(self.tree_id)

    @property
    def reasoning_item_id(self) -> str:
        return f"rs_{self.tree_id}"

    @property
    def message_item_id(self) -> str:
        return f"msg_{self.tree_id}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "tree_id": self.tree_id,
            "model": self.model,
            "effort": self.effort.value,
            "summary": self.summary,
            "background": self.background,
            "created_at": self.created_at,
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResponseShape:
        return cls(**{**data, "effort": Effort(data["effort"])})


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a search ended, as far as a response reports it."""

    status: ResponseStatus
    answer: str | None = None
    usage: Usage | None = None
    incomplete_reason: IncompleteReason | None = None
    error: ApiError | None = None
    # The `reasoning` extension: tree, strategy, counts, the ledger.
    details: Mapping[str, Any] = field(default_factory=dict)


def outcome_of(result: SolveResult, budget: BudgetView) -> Outcome:
    """A finished search: completed, or incomplete when its budget, its deadline or a failing
    engine stopped it early (the answer is then the best candidate it had grown)."""
    details = {
        "strategy": result.strategy,
        "answer": result.answer,
        "verified": result.verified,
        "branches": result.branches,
        "verifier_calls": result.verifier_calls,
        "winning_path": list(result.winning_path),
        "budget": {"granted_tokens": budget.granted_tokens, "spent_tokens": budget.spent_tokens},
    }
    if result.status == "incomplete" or result.finish_reason == "length":
        # OpenAI's name for a spent budget; a deadline or a failure says so in its own word.
        reason = _INCOMPLETE_REASONS.get(result.incomplete_reason or "budget", "max_output_tokens")
        return Outcome("incomplete", result.content, result.usage, reason, details=details)
    return Outcome("completed", result.content, result.usage, details=details)


def usage_object(usage: Usage) -> dict[str, Any]:
    """Responses `usage`: every generated token is reasoning, the answer comes from the winning chain.

    `cache_write_tokens` are the prompt tokens the engine prefilled rather than read from its
    prefix cache (vLLM keeps them in the cache in whole blocks).
    """
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.prompt_tokens - usage.cached_tokens,
        },
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.completion_tokens},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def reasoning_item(shape: ResponseShape, parts: Sequence[str], status: str) -> dict[str, Any]:
    return {
        "id": shape.reasoning_item_id,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": text} for text in parts],
        "status": status,
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(shape: ResponseShape, text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [_text_part(text)]
    return {
        "id": shape.message_item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": content,
    }


def response_object(
    shape: ResponseShape,
    status: ResponseStatus,
    parts: Sequence[str] = (),
    outcome: Outcome | None = None,
) -> dict[str, Any]:
    """The Response object at `status`: its reasoning item holds `parts` so far."""
    finished = status in FINAL_STATUSES
    item_status = "completed" if status == "completed" else "incomplete" if finished else "in_progress"
    output = [reasoning_item(shape, parts, item_status)] if parts or finished else []
    if outcome is not None and outcome.answer is not None:
        output.append(message_item(shape, outcome.answer, item_status))
    error = outcome.error if outcome is not None else None
    reason = outcome.incomplete_reason if outcome is not None else None
    return {
        "id": shape.response_id,
        "object": "response",
        "created_at": shape.created_at,
        "completed_at": time.time() if status == "completed" else None,
        "status": status,
        "background": shape.background,
        "model": shape.model,
        "instructions": shape.instructions,
        "max_output_tokens": shape.max_output_tokens,
        "metadata": dict(shape.metadata),
        "output": output,
        "usage": usage_object(outcome.usage) if outcome is not None and outcome.usage is not None else None,
        "incomplete_details": {"reason": reason} if reason is not None else None,
        "error": {"code": error.code or error.type, "message": error.message} if error is not None else None,
        # OpenAI's `reasoning` config, extended (as in the chat API) with what the search did.
        "reasoning": {
            "effort": shape.effort.value,
            "summary": shape.summary,
            "tree_id": shape.tree_id,
            **(dict(outcome.details) if outcome is not None else {}),
        },
        "parallel_tool_calls": False,
        "tool_choice": "none",
        "tools": [],
        "store": True,
        "text": {"format": {"type": "text"}},
    }


def summary_texts(response: Mapping[str, Any]) -> list[str]:
    """The reasoning summary's parts in a stored Response object."""
    return [
        part["text"]
        for item in response.get("output", [])
        if item.get("type") == "reasoning"
        for part in item.get("summary", [])
    ]


def output_text(response: Mapping[str, Any]) -> str:
    """The answer in a stored Response object ('' when it has none)."""
    texts = [
        part["text"]
        for item in response.get("output", [])
        if item.get("type") == "message"
        for part in item.get("content", [])
        if part.get("type") == "output_text"
    ]
    return "".join(texts)


# ---- summaries --------------------------------------------------------------------------


def progress_part(detail: SummaryDetail, data: Mapping[str, Any]) -> str | None:
    """The summary part for a new best path (a `progress` event); concise summaries have none."""
    if detail == "concise":
        return None
    line = describe_event("progress", data)
    if detail == "auto":
        return line
    steps = [str(step) for step in data.get("best_path") or []]
    return "\n".join([line, *(_numbered(i, step) for i, step in enumerate(steps, start=1))])


def final_parts(
    detail: SummaryDetail, result: SolveResult, steps: Sequence[str], reason: str | None
) -> list[str]:
    """The winning path's summary: one line (concise), the search's own summary (auto), or every
    step of the path and the tally (detailed)."""
    why = reason or "the best-scored chain"
    if detail == "concise":
        return [f"Answer: {result.answer} ({why})."]
    if detail == "auto":
        return [result.summary]
    tally = (
        f"Answer: {result.answer} ({why}); strategy {result.strategy}, {result.branches} chains, "
        f"{result.verifier_calls} verifier calls, {result.usage.completion_tokens} reasoning tokens."
    )
    return [*(_numbered(i, step) for i, step in enumerate(steps, start=1)), tally]


def path_steps(texts: Sequence[str]) -> list[str]:
    """The steps of a winning path from its nodes' texts: a whole chain (one node) by its lines."""
    if len(texts) == 1:
        return [line.strip() for line in texts[0].splitlines() if line.strip()]
    return [text.strip() for text in texts if text.strip()]


def _numbered(index: int, step: str) -> str:
    text = " ".join(step.split())
    if len(text) > DETAILED_STEP_CHARS:
        text = text[: DETAILED_STEP_CHARS - 1] + "…"
    return f"{index}. {text}"


# ---- stream events ---------------------------------------------------------------------------


class ResponseEvents:
    """Builds one response's stream events in order, numbering them from `sequence`.

    It keeps the summary parts sent so far, so `response()` is the object a client that
    accumulated the events holds.
    """

    def __init__(self, shape: ResponseShape, sequence: int = 0) -> None:
        self.shape = shape
        self.parts: list[str] = []
        self._sequence = sequence

    def _event(self, type_: str, **fields: Any) -> dict[str, Any]:
        event = {"type": type_, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def response(self, status: ResponseStatus, outcome: Outcome | None = None) -> dict[str, Any]:
        return response_object(self.shape, status, self.parts, outcome)

    def started(self) -> list[dict[str, Any]]:
        """`response.created`, `response.in_progress` and the reasoning item's start."""
        return [
            self._event("response.created", response=self.response("queued")),
            self._event("response.in_progress", response=self.response("in_progress")),
            self._event(
                "response.output_item.added",
                output_index=0,
                item=reasoning_item(self.shape, [], "in_progress"),
            ),
        ]

    def summary_part(self, text: str) -> list[dict[str, Any]]:
        """A new summary part: added, its text as one delta, done."""
        index = len(self.parts)
        self.parts.append(text)
        where = {"item_id": self.shape.reasoning_item_id, "output_index": 0, "summary_index": index}
        return [
            self._event(
                "response.reasoning_summary_part.added", **where, part={"type": "summary_text", "text": ""}
            ),
            self._event("response.reasoning_summary_text.delta", **where, delta=text),
            self._event("response.reasoning_summary_text.done", **where, text=text),
            self._event(
                "response.reasoning_summary_part.done", **where, part={"type": "summary_text", "text": text}
            ),
        ]

    def finished(self, outcome: Outcome) -> list[dict[str, Any]]:
        """The reasoning item's end, the answer (if any) as a message item, then the last event."""
        item_status = "completed" if outcome.status == "completed" else "incomplete"
        events = [
            self._event(
                "response.output_item.done",
                output_index=0,
                item=reasoning_item(self.shape, self.parts, item_status),
            )
        ]
        if outcome.answer is not None:
            events += self._answer(outcome.answer, item_status)
        final = self.response(outcome.status, outcome)
        # No `response.cancelled` event exists: a cancelled response ends with `response.failed`
        # whose response says `status: cancelled`.
        last = {"completed": "response.completed", "incomplete": "response.incomplete"}
        events.append(self._event(last.get(outcome.status, "response.failed"), response=final))
        return events

    def _answer(self, text: str, status: str) -> list[dict[str, Any]]:
        item_id = self.shape.message_item_id
        where = {"item_id": item_id, "output_index": 1, "content_index": 0}
        started = message_item(self.shape, None, "in_progress")
        done = message_item(self.shape, text, status)
        return [
            self._event("response.output_item.added", output_index=1, item=started),
            self._event("response.content_part.added", **where, part=_text_part("")),
            self._event("response.output_text.delta", **where, delta=text, logprobs=[]),
            self._event("response.output_text.done", **where, text=text, logprobs=[]),
            self._event("response.content_part.done", **where, part=_text_part(text)),
            self._event("response.output_item.done", output_index=1, item=done),
        ]


def sse_event(event: Mapping[str, Any]) -> bytes:
    """One Server-Sent Event as OpenAI sends Responses events: `event:` the type, `data:` JSON."""
    data = json.dumps(event, separators=(",", ":"))
    return f"event: {event['type']}\ndata: {data}\n\n".encode()


def is_final_event(event: Mapping[str, Any]) -> bool:
    return event.get("type") in {"response.completed", "response.incomplete", "response.failed"}


def deleted_object(response_id_: str) -> dict[str, Any]:
    return {"id": response_id_, "object": "response.deleted", "deleted": True}
