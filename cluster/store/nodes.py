"""Thought-tree nodes and how one node is laid out as a Redis hash.

Every field is its own hash field, written as text Python produced: numbers keep their full
precision (no JSON re-encoding inside Redis), one field changes without rewriting the node,
and MCTS statistics are counted with HINCRBY/HINCRBYFLOAT, atomically. Per-verifier scores
and reasons are fields named `s:<verifier>` and `r:<verifier>`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from cluster.store.keys import as_text

NodeStatus = Literal["open", "expanded", "answer", "pruned", "won"]
NODE_STATUSES: frozenset[str] = frozenset(get_args(NodeStatus))
# Nodes the search may still pick up; only these (and only once scored) sit in the frontier.
FRONTIER_STATUSES: frozenset[str] = frozenset({"open", "expanded"})

SCORE_PREFIX = "s:"
REASON_PREFIX = "r:"
_OPTIONAL_TEXT = ("answer", "replica", "finish_reason")
_COUNTS = ("prompt_tokens", "completion_tokens", "cached_tokens")


@dataclass(frozen=True, slots=True)
class NodeDraft:
    """A node as the search proposes it; the store assigns id, parent and depth."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    replica: str | None = None
    answer: str | None = None
    status: NodeStatus = "open"
    # Mean log-probability of the step's tokens under the model (its own confidence).
    logprob: float | None = None
    # Why the engine stopped writing it: "stop" (its own end or a stop string) or "length".
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class ThoughtNode:
    node_id: str
    parent_id: str | None
    depth: int
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    score: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    status: NodeStatus = "open"
    answer: str | None = None
    replica: str | None = None
    created_at: float = 0.0
    logprob: float | None = None
    # Tree search statistics (MCTS): evaluations backed up through this node and their sum.
    visits: int = 0
    value_sum: float = 0.0
    # What each verifier said about the node, in its own words.
    verdicts: dict[str, str] = field(default_factory=dict)
    finish_reason: str | None = None

    @property
    def mean_value(self) -> float | None:
        return self.value_sum / self.visits if self.visits else None


def check_status(status: str, allowed: frozenset[str], what: str) -> str:
    if status not in allowed:
        raise ValueError(f"{what} status {status!r} is not one of {sorted(allowed)}")
    return status


def finite(name: str, value: float) -> str:
    """A float as exact text; JSON has no NaN/inf, and a NaN frontier score would sort unpredictably."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return repr(number)


def draft_fields(draft: NodeDraft, now: float) -> dict[str, str]:
    """A new node's fields, without parent and depth (the store's script adds those)."""
    check_status(draft.status, NODE_STATUSES, "node")
    fields = {
        "text": draft.text,
        "status": draft.status,
        "created_at": repr(now),
        "visits": "0",
        "value_sum": "0",
    }
    fields.update({name: str(int(getattr(draft, name))) for name in _COUNTS})
    fields.update({name: value for name in _OPTIONAL_TEXT if (value := getattr(draft, name)) is not None})
    if draft.logprob is not None:
        fields["logprob"] = finite("logprob", draft.logprob)
    return fields


def score_fields(
    score: float | None = None,
    scores: Mapping[str, float] | None = None,
    reasons: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Fields that record a combined score and what each verifier said."""
    fields = {} if score is None else {"score": finite("score", score)}
    fields.update({SCORE_PREFIX + name: finite(name, value) for name, value in (scores or {}).items()})
    fields.update({REASON_PREFIX + name: reason for name, reason in (reasons or {}).items()})
    return fields


def node_from_fields(node_id: str, raw: Mapping[Any, Any]) -> ThoughtNode:
    data = {as_text(k): as_text(v) for k, v in raw.items()}
    parent = data.get("parent_id", "")
    return ThoughtNode(
        node_id=node_id,
        parent_id=parent or None,
        depth=int(data.get("depth", "0")),
        text=data.get("text", ""),
        prompt_tokens=int(data.get("prompt_tokens", "0")),
        completion_tokens=int(data.get("completion_tokens", "0")),
        cached_tokens=int(data.get("cached_tokens", "0")),
        score=_optional_float(data.get("score")),
        scores={k[len(SCORE_PREFIX) :]: float(v) for k, v in data.items() if k.startswith(SCORE_PREFIX)},
        status=check_status(data.get("status", "open"), NODE_STATUSES, "node"),  # type: ignore[arg-type]
        answer=data.get("answer"),
        replica=data.get("replica"),
        created_at=float(data.get("created_at", "0")),
        logprob=_optional_float(data.get("logprob")),
        visits=int(data.get("visits", "0")),
        value_sum=float(data.get("value_sum", "0")),
        verdicts={k[len(REASON_PREFIX) :]: v for k, v in data.items() if k.startswith(REASON_PREFIX)},
        finish_reason=data.get("finish_reason"),
    )


def node_order(node_id: str) -> tuple[int, str]:
    # Ids are "n<counter>": numeric order is creation order, which lexicographic is not.
    digits = node_id[1:]
    return (int(digits) if digits.isdigit() else -1, node_id)


def _optional_float(text: str | None) -> float | None:
    return None if text is None else float(text)
