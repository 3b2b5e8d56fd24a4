"""The OpenAI-compatible HTTP schema: request validation, error bodies and response shape.

Requests are validated here into typed structs before anything is stored or scheduled, so
bad input costs nothing and gets a message a person can act on.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cluster.search import strategy_names
from cluster.tasks import task_names
from cluster.types import ChatMessage, Effort, SolveResult, Usage

ErrorType = Literal[
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "rate_limit_error",
    "server_error",
    "timeout_error",
]
MIN_COMPLETION_TOKENS = 16
# Bounds that keep validation and prompt rendering cheap whatever a client sends; a prompt
# that passes them is still checked against the model's context length.
MAX_MESSAGES = 1024
MAX_MODEL_NAME_CHARS = 256
# OpenAI's `seed` is a 64-bit signed integer, and so is what the engine accepts.
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1


class ApiError(Exception):
    """An error the gateway returns as an OpenAI-style body with this HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: ErrorType = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        # E.g. Retry-After, and x-should-retry for clients that retry on their own.
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    # The content part types that carry text, and how an error names them.
    text_part_types: ClassVar[frozenset[str]] = frozenset({"text"})
    text_parts_named: ClassVar[str] = "text content parts"

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") not in self.text_part_types or not isinstance(part.get("text"), str):
                raise ValueError(f"only {self.text_parts_named} are supported")
            parts.append(part["text"])
        return "".join(parts)


# Field checks shared by the chat and the Responses schemas: the message names what is allowed.
def effort_field(name: str, value: object) -> Effort | None:
    if value is None or (isinstance(value, str) and value in {e.value for e in Effort}):
        return None if value is None else Effort(value)
    allowed = ", ".join(repr(e.value) for e in Effort)
    raise ValueError(f"{name} must be one of {allowed}; got {value!r}")


def task_field(value: object) -> str:
    if isinstance(value, str) and value in task_names():
        return value
    allowed = ", ".join(repr(name) for name in task_names())
    raise ValueError(f"task must be one of {allowed}; got {value!r}")


def strategy_field(value: str | None) -> str | None:
    if value is None or value in strategy_names():
        return value
    allowed = ", ".join(repr(name) for name in strategy_names())
    raise ValueError(f"strategy must be one of {allowed}; got {value!r}")


class ProblemRequest(Protocol):
    """What the gateway needs of a request to build its problem and budget (chat or Responses)."""

    @property
    def task(self) -> str: ...
    @property
    def seed(self) -> int | None: ...
    @property
    def strategy(self) -> str | None: ...
    def chat_messages(self) -> tuple[ChatMessage, ...]: ...
    def completion_cap(self) -> int | None: ...


class ProblemFields(BaseModel):
    """Fields the chat and the Responses requests share: the seed and this service's extensions."""

    # OpenAI clients send parameters this service does not use (top_p, user, ...); they are
    # ignored rather than refused, like the OpenAI API does for optional hints.
    model_config = ConfigDict(extra="ignore", strict=True)

    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    # Extension: the task family selects prompt, answer format and verifiers.
    task: str = "general"
    # Extension: run this search strategy within the effort's budget (evaluation baselines).
    strategy: str | None = None

    @field_validator("task", mode="before")
    @classmethod
    def _task(cls, value: object) -> object:
        return task_field(value)

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, value: str | None) -> str | None:
        return strategy_field(value)


class ChatCompletionRequest(ProblemFields):
    """The subset of OpenAI's chat completion body this service honours, plus its extensions."""

    model: str = Field(max_length=MAX_MODEL_NAME_CHARS)
    messages: list[MessageIn] = Field(min_length=1, max_length=MAX_MESSAGES)
    reasoning_effort: Effort | None = None
    max_completion_tokens: int | None = Field(default=None, ge=MIN_COMPLETION_TOKENS)
    max_tokens: int | None = Field(default=None, ge=MIN_COMPLETION_TOKENS)
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False

    @field_validator("reasoning_effort", mode="before")
    @classmethod
    def _effort(cls, value: object) -> object:
        return effort_field("reasoning_effort", value)

    def chat_messages(self) -> tuple[ChatMessage, ...]:
        # OpenAI's newer "developer" role is what older templates call "system".
        return tuple(
            ChatMessage("system" if m.role == "developer" else m.role, m.text()) for m in self.messages
        )

    def completion_cap(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


def parse_json_body(raw: bytes) -> object:
    """Decode a JSON body; anything Python's decoder refuses is a 400, never a server error."""
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from exc
    except RecursionError:
        raise ApiError(400, "the request body is nested too deeply", code="invalid_json") from None
    except ValueError:
        # The only other refusal: an integer past Python's int conversion limit.
        limit = sys.get_int_max_str_digits()
        raise ApiError(
            400, f"the request body has a number longer than {limit:,} digits", code="invalid_json"
        ) from None


def json_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what is wrong with it."""
    payload = parse_json_body(raw)
    if not isinstance(payload, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    return payload


def parse_chat_request(raw: bytes) -> ChatCompletionRequest:
    """Parse and validate a request body; every failure is a 400 naming the bad field."""
    payload = json_object(raw)
    try:
        request = ChatCompletionRequest.model_validate(payload)
        request.chat_messages()
    except ValidationError as exc:
        raise validation_error(exc) from exc
    except ValueError as exc:
        raise ApiError(400, f"messages: {exc}", param="messages") from exc
    if not any(m.role == "user" and m.text().strip() for m in request.messages):
        raise ApiError(400, "messages must contain a user message with text", param="messages")
    _check_encodable(request)
    return request


def _check_encodable(request: ChatCompletionRequest) -> None:
    """JSON escapes can spell lone UTF-16 surrogates ("\\ud800"), which no tokenizer or
    Redis write can encode: refuse them here, before anything is stored."""
    texts = [("model", request.model), ("strategy", request.strategy or "")]
    texts += [(f"messages.{i}.content", m.text()) for i, m in enumerate(request.messages)]
    for param, text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(
                400, f"{param} contains a lone UTF-16 surrogate, which is not valid text", param=param
            ) from None


def request_fingerprint(request: ChatCompletionRequest) -> str:
    """What a request asks, as a SHA-256: the fields this service honours, whatever their order
    or spacing in the body; `stream` is left out (it changes how the answer is sent, not what is
    asked), so a retry may stream what the first request did not, or the other way round."""
    return hashlib.sha256(request.model_dump_json(exclude={"stream"}).encode()).hexdigest()


def validation_error(exc: ValidationError) -> ApiError:
    """A 400 naming the first bad field of a pydantic validation error."""
    first = exc.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    detail = f"{location}: {message}" if location else message
    if len(exc.errors()) > 1:
        detail += f" (and {len(exc.errors()) - 1} more problem(s))"
    param = str(first["loc"][0]) if first["loc"] else None
    return ApiError(400, detail, param=param)


@dataclass(frozen=True, slots=True)
class BudgetView:
    granted_tokens: int
    spent_tokens: int


def completion_id(tree_id: str) -> str:
    """The `id` of a completion and of every chunk of its stream."""
    return f"chatcmpl-{tree_id}"


def usage_body(usage: Usage) -> dict[str, Any]:
    """OpenAI's `usage` object, with reasoning and cached tokens in its details."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        # Every generated token is reasoning: the answer is taken from the winning chain.
        "completion_tokens_details": {"reasoning_tokens": usage.completion_tokens},
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def reasoning_body(
    result: SolveResult, effort: Effort, budget: BudgetView, admission: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The documented `reasoning` extension object; `admission` is the admission decision, if any."""
    body: dict[str, Any] = {
        "tree_id": result.tree_id,
        "effort": effort.value,
        "strategy": result.strategy,
        "summary": result.summary,
        "answer": result.answer,
        "status": result.status,
        "incomplete_reason": result.incomplete_reason,
        "verified": result.verified,
        "branches": result.branches,
        "verifier_calls": result.verifier_calls,
        "winning_path": list(result.winning_path),
        "budget": {"granted_tokens": budget.granted_tokens, "spent_tokens": budget.spent_tokens},
    }
    if admission is not None:
        body["admission"] = dict(admission)
    return body


def chat_completion_body(
    result: SolveResult,
    model: str,
    effort: Effort,
    budget: BudgetView,
    admission: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A standard chat completion plus the documented `reasoning` extension object."""
    return {
        "id": completion_id(result.tree_id),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.content},
                "finish_reason": result.finish_reason,
            }
        ],
        "usage": usage_body(result.usage),
        "reasoning": reasoning_body(result, effort, budget, admission),
    }
