"""Typed structs that cross process boundaries (gateway, planner, generator, verifier).

They are plain dataclasses so that Ray pickles them cheaply and every deployment
sees the same shape; HTTP-facing schemas live in `cluster.api`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal


class Effort(enum.StrEnum):
    """OpenAI's reasoning effort names, in order: tenant ceilings and degrading compare by it."""

    NONE = "none"
    MINIMAL = "minimal"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    XHIGH = "xhigh"

    @property
    def rank(self) -> int:
        return list(Effort).index(self)


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class Problem:
    """What the user asked, as the search and the verifiers see it."""

    messages: tuple[ChatMessage, ...]
    # The task family (`cluster.tasks`): prompt, step format, answer format, verifiers.
    task: str = "general"
    # Numbers the task parsed from the question (Game of 24: the four numbers).
    numbers: tuple[int, ...] | None = None
    # A known correct answer (evaluation only); verifiers that need one skip without it.
    reference: str | None = None

    @property
    def question(self) -> str:
        """The last user message: the problem statement verifiers and judges read."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return ""


@dataclass(frozen=True, slots=True)
class Candidate:
    """One chain of thought proposed by the model, with the answer extracted from it."""

    node_id: str
    text: str
    answer: str | None


@dataclass(frozen=True, slots=True)
class Verdict:
    """A verifier's judgement of one candidate.

    `passed` is None when the verifier cannot judge this candidate (no reference answer,
    no equations to check); `score` is then neutral and callers should not rely on it.
    """

    verifier: str
    score: float
    passed: bool | None
    reason: str
    # False for verifiers that check steps only: right steps do not make the answer right.
    judges_answer: bool = True
    # Engine tokens the verifier spent (model judges only), counted by the engine.
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Completion:
    """One sequence the engine generated, with the engine's own counts."""

    text: str
    token_count: int
    finish_reason: str | None
    # Sum of the sampled tokens' log-probabilities when requested; None otherwise.
    cumulative_logprob: float | None = None
    # The stop string that ended the sequence; None when it ended at end-of-sequence or length.
    stop_reason: str | None = None


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """Expand one node: sample `n` continuations of `prompt` in one batched engine call."""

    prompt: str
    n: int
    max_tokens: int
    temperature: float
    top_k: int = -1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # Return log-probabilities of this many top tokens at each step (judges use 1 step).
    logprobs: int | None = None
    # Structured output: every completion must match this regular expression.
    regex: str | None = None
    # Requests with the same key (a tree id) prefer the replica that served the last one,
    # whose prefix cache holds their shared prefix.
    affinity_key: str | None = None
    # vLLM's prefix-cache salt: only requests with the same salt share cached blocks. One salt
    # per tenant (cluster.auth.cache_salt) keeps cached-token counts from revealing what
    # another tenant's prompts contain.
    cache_salt: str | None = None
    # W3C trace context (traceparent, baggage) of the caller's span; None when tracing is off.
    trace_context: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class GenerationResult:
    completions: tuple[Completion, ...]
    prompt_tokens: int
    cached_tokens: int
    replica: str
    # For `logprobs` requests: top tokens of the first generated position and their logprobs.
    first_token_logprobs: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
        )


@dataclass(frozen=True, slots=True)
class SolveRequest:
    """Gateway -> planner: solve this problem within this budget, writing to this tree."""

    tree_id: str
    tenant: str
    effort: Effort
    problem: Problem
    prompt: str
    max_reasoning_tokens: int
    seed: int | None = None
    # Overrides the effort's strategy (its budget still applies); evaluation baselines use it.
    strategy: str | None = None
    # Continue the stored tree of a planner that died instead of starting a new one.
    resume: bool = False
    # When the answer is due (epoch seconds): the gateway sets it when the request arrives, so
    # time queued for admission counts; None: the effort's deadline from when the search starts.
    deadline_at: float | None = None
    # The tenant's prefix-cache salt (cluster.auth.cache_salt), carried by every engine call.
    cache_salt: str | None = None
    # W3C trace context (traceparent, baggage) of the caller's span; None when tracing is off.
    trace_context: dict[str, str] | None = None


SearchStatus = Literal["complete", "incomplete"]


@dataclass(frozen=True, slots=True)
class SolveResult:
    """Planner -> gateway: the chosen answer and honest accounting of what it cost.

    An incomplete search still answers: the best candidate its budget bought, with the reason
    it stopped early (`deadline`, `budget`, `cancelled`, `error`).
    """

    tree_id: str
    answer: str
    content: str
    summary: str
    strategy: str
    usage: Usage
    branches: int
    verifier_calls: int
    winning_path: tuple[str, ...] = ()
    finish_reason: str = "stop"
    status: SearchStatus = "complete"
    incomplete_reason: str | None = None
    # A program verifier proved the answer right (a model's opinion never counts).
    verified: bool = False


@dataclass(frozen=True, slots=True)
class VerifyRequest:
    """Planner -> verifier: judge these candidates with these verifiers, in order."""

    problem: Problem
    candidates: tuple[Candidate, ...]
    verifiers: tuple[str, ...]
    # W3C trace context (traceparent, baggage) of the caller's span; None when tracing is off.
    trace_context: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class VerifyResult:
    # One tuple of verdicts per candidate, in the order the candidates were given.
    verdicts: tuple[tuple[Verdict, ...], ...]
