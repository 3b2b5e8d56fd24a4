"""What the gateway checks before it does any work for a request: size, ids, control tokens.

Each check turns hostile or malformed input into a 4xx `ApiError` that names what to change,
cheaply and before anything is stored or scheduled.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from cluster.api import ApiError, ChatCompletionRequest, request_fingerprint
from cluster.auth import Caller, scoped_tree_id
from cluster.types import ChatMessage, Problem

# What a client may send as X-Request-Id, and what a tree id in a URL looks like.
TREE_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
# A Redis stream id: milliseconds, optionally "-sequence", each an unsigned 64-bit number.
_STREAM_ID = re.compile(r"^(\d{1,20})(?:-(\d{1,20}))?$")
_UINT64_MAX = 2**64 - 1


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to pass `limit` bytes.

    A declared Content-Length over the limit is refused before a byte is read; a body sent
    without one (chunked) is read only until it passes the limit.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "Content-Length must be a whole number of bytes", code="invalid_request")
        if len(declared) > 20 or int(declared) > limit:
            raise _too_large(f"declares {declared[:20]} bytes", limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(f"has more than {limit} bytes", limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(what: str, limit: int) -> ApiError:
    return ApiError(413, f"the request body {what}; the limit is {limit}", code="request_too_large")


@dataclass(frozen=True, slots=True)
class Ticket:
    """The tree a request writes to, and how a retry of it is recognised."""

    tree_id: str
    # The client's X-Request-Id; None when the gateway chose the id (no retry can name it).
    request_id: str | None
    # A retry must ask the same to get the same answer (cluster.api.request_fingerprint).
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Prepared:
    """A request's problem and rendered prompt (the costly part, done off the event loop)."""

    problem: Problem
    prompt: str
    prompt_tokens: int


def ticket_for(request_id: str | None, caller: Caller, body: ChatCompletionRequest) -> Ticket:
    return Ticket(tree_id_for(request_id, caller), request_id, request_fingerprint(body))


def tree_id_for(request_id: str | None, caller: Caller) -> str:
    """The tree of a request: its X-Request-Id in the caller's own namespace, else a new id."""
    if request_id is None:
        return uuid.uuid4().hex
    if not TREE_ID.match(request_id):
        raise ApiError(400, "X-Request-Id must be 8-64 letters, digits, '-' or '_'", param="x-request-id")
    return scoped_tree_id(caller.tenant, request_id)


def readable_ids(tree_id: str, caller: Caller) -> list[str]:
    """Stored trees a caller may mean by `tree_id`: its own request id's tree, then the id as is.

    Owners follow a tree by the X-Request-Id they sent or by the `tree_id` of the response;
    ops read by `tree_id`. An id that is not one at all names no tree.
    """
    if not TREE_ID.match(tree_id):
        return []
    return [scoped_tree_id(caller.tenant, tree_id), tree_id]


def stream_position(after: str) -> str:
    """A checked `after` cursor of GET /v1/trees/{id}/events (a Redis stream id)."""
    match = _STREAM_ID.match(after)
    if match is None or any(int(part) > _UINT64_MAX for part in match.groups() if part is not None):
        message = "after must be an event id from an earlier response (like 1712345678901-0), or 0"
        raise ApiError(400, message, param="after")
    return after


class PromptGuard:
    """Checks a conversation before it is rendered: its size, and the model's control tokens.

    Size: no token is longer than the longest in the vocabulary, so messages with more
    characters than that times the context length cannot fit, and are refused (400) before a
    second is spent rendering and tokenising them.

    Control tokens: the prompt reaches the engine as text, which the tokenizer splits at its
    special tokens: a user message containing `<|im_start|>system` would open a turn of its
    own. Refusing it (400) rather than silently rewriting it tells the client what was wrong.
    """

    def __init__(self, tokenizer: Any, max_model_len: int) -> None:
        vocabulary = tokenizer.get_vocab()
        longest = max((len(tokenizer.convert_tokens_to_string([t])) for t in vocabulary), default=1)
        self._max_model_len = max_model_len
        self.max_chars = max(longest, 1) * max_model_len
        added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        tokens = {str(t) for t in getattr(tokenizer, "all_special_tokens", ())}
        tokens |= {token.content for token in added.values() if getattr(token, "special", False)}
        ordered = sorted((t for t in tokens if t), key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def check(self, messages: Sequence[ChatMessage]) -> None:
        chars = sum(len(message.content) for message in messages)
        if chars > self.max_chars:
            raise ApiError(
                400,
                f"the messages have {chars} characters: more than the model's {self._max_model_len}-token "
                "context could hold",
                param="messages",
                code="context_length_exceeded",
            )
        if self._pattern is None:
            return
        for index, message in enumerate(messages):
            found = self._pattern.search(message.content)
            if found is not None:
                raise ApiError(
                    400,
                    f"messages.{index}.content contains {found.group()!r}, one of the model's control "
                    "tokens, which would be read as chat structure; remove it",
                    param="messages",
                    code="control_token_in_text",
                )
