"""The `stream=true` format: OpenAI chat-completion chunks as Server-Sent Events.

A stream is, in order: a chunk with `delta.role`; one chunk per progress event of the tree,
its text in `delta.reasoning_content` (where vLLM and others put reasoning text) and the
event itself in a top-level `reasoning` object; the answer as `delta.content`; a chunk with
`finish_reason`; a last chunk with no choices that carries `usage` and the `reasoning` object
of the non-streaming response; then `data: [DONE]`. An error after the stream started is one
`data: {"error": {...}}` event (OpenAI's error body) before `[DONE]`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cluster.api import completion_id

SSE_DONE = b"data: [DONE]\n\n"
# Step texts and other values are cut to this many characters in a progress line.
PREVIEW_CHARS = 120


def sse(payload: Mapping[str, Any]) -> bytes:
    """One Server-Sent Event carrying `payload` as JSON."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


@dataclass(frozen=True, slots=True)
class ChunkStream:
    """Builds the chunks of one streamed completion; they share its id, creation time and model."""

    tree_id: str
    model: str
    created: int = field(default_factory=lambda: int(time.time()))

    def chunk(self, delta: Mapping[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": completion_id(self.tree_id),
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": dict(delta), "finish_reason": finish_reason}],
        }

    def role(self) -> dict[str, Any]:
        return self.chunk({"role": "assistant"})

    def progress(self, kind: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """A progress event of the tree: a line of reasoning text plus the event's own data."""
        chunk = self.chunk({"reasoning_content": describe_event(kind, data) + "\n"})
        # The event's data first, so that a data field never hides the event's kind or tree.
        chunk["reasoning"] = {**data, "event": kind, "tree_id": self.tree_id}
        return chunk

    def content(self, text: str) -> dict[str, Any]:
        return self.chunk({"content": text})

    def finish(self, finish_reason: str) -> dict[str, Any]:
        return self.chunk({}, finish_reason)

    def final(self, usage: Mapping[str, Any], reasoning: Mapping[str, Any]) -> dict[str, Any]:
        """The last chunk: no choices (as OpenAI's usage chunk), the usage and the reasoning object."""
        chunk = self.chunk({})
        chunk["choices"] = []
        chunk["usage"] = dict(usage)
        chunk["reasoning"] = dict(reasoning)
        return chunk


def describe_event(kind: str, data: Mapping[str, Any]) -> str:
    """One short human-readable line for a progress event; never fails on unexpected data."""
    if kind == "progress":
        return _describe_progress(data)
    if kind == "chains":
        return f"grew {_count(data.get('count'), 'chain')} ({_count(data.get('tokens'), 'token')})"
    if kind == "strategy":
        return _with_reason(f"strategy {_preview(data.get('choice'))}", data.get("reason"))
    if kind == "done":
        return _with_reason(f"finished with answer {_preview(data.get('answer'))}", data.get("reason"))
    if kind == "failed":
        return f"search failed: {_preview(data.get('error'))}"
    fields = ", ".join(f"{name} {_preview(value)}" for name, value in data.items())
    return f"{kind}: {fields}" if fields else kind


def _describe_progress(data: Mapping[str, Any]) -> str:
    line = f"depth {_preview(data.get('depth'))}: explored {_preview(data.get('explored'))}, "
    line += f"pruned {_preview(data.get('pruned'))}"
    path = data.get("best_path")
    if isinstance(path, list) and path:
        line += f"; best: {_preview(path[-1])}"
        score = data.get("best_score")
        if isinstance(score, int | float) and not isinstance(score, bool):
            line += f" (score {score:.2f})"
    return line


def _with_reason(text: str, reason: object) -> str:
    return f"{text} ({_preview(reason)})" if reason else text


def _count(value: object, noun: str) -> str:
    return f"{_preview(value)} {noun}" + ("" if value == 1 else "s")


def _preview(value: object) -> str:
    """A value on one line, cut to PREVIEW_CHARS: step texts span lines and can be long."""
    text = " ".join(str(value).split()) if value is not None else "?"
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"
