"""A scripted engine for driving search logic deterministically (the real one runs in e2e)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from cluster.types import Completion, GenerationRequest, GenerationResult


@dataclass
class ScriptedGenerator:
    """Answers each call with the next scripted batch of texts, truncated to what was asked.

    Token counts are whitespace-separated words of the scripted text, capped at max_tokens:
    exact and known to the test, as the real engine's counts are to the service.
    """

    batches: list[Sequence[str]]
    delay_s: float = 0.0
    fail_with: Exception | None = None
    requests: list[GenerationRequest] = field(default_factory=list)

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        self.requests.append(request)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_with is not None:
            raise self.fail_with
        texts = list(self.batches.pop(0))[: request.n]
        completions = tuple(_complete(text, request.max_tokens) for text in texts)
        return GenerationResult(completions, prompt_tokens=20, cached_tokens=0, replica="scripted")


def _complete(text: str, max_tokens: int) -> Completion:
    words = text.split(" ")
    kept = words[:max_tokens]
    finish = "stop" if len(words) <= max_tokens else "length"
    return Completion(" ".join(kept), len(kept), finish)
