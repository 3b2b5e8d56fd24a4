"""A model judge: asks the engine whether a chain's answer is right, where no program can judge.

The judge reads one token's log-probabilities ("Yes" vs "No") instead of generating a
critique: it costs one decoding step on top of a prefill that the prefix cache mostly holds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import ClassVar

from cluster.prompts import PromptBuilder
from cluster.types import Candidate, GenerationRequest, Problem, Verdict
from cluster.verifiers.base import Verifier, VerifierDeps, VerifierEngine, register_verifier

# The engine returns at most this many alternatives per position; "Yes"/"No" are near the top.
JUDGE_TOP_LOGPROBS = 20


@register_verifier
class ModelJudgeVerifier(Verifier):
    name: ClassVar[str] = "judge"
    kind = "model"
    # It reads one token's log-probabilities ("Yes"/"No").
    tokens_per_call = 1

    def __init__(self, engine: VerifierEngine, prompts: PromptBuilder, max_model_len: int) -> None:
        self._engine = engine
        self._prompts = prompts
        self._max_model_len = max_model_len

    @classmethod
    def build(cls, deps: VerifierDeps) -> ModelJudgeVerifier:
        if deps.engine is None or deps.prompts is None or deps.max_model_len <= 0:
            raise ValueError("the model judge needs the engine, the prompt builder and the context length")
        return cls(deps.engine, deps.prompts, deps.max_model_len)

    async def verify(self, problem: Problem, candidate: Candidate) -> Verdict:
        prompt = self._prompts.render_judge(problem, candidate.text)
        prompt_tokens = self._prompts.count_tokens(prompt)
        if prompt_tokens + 1 > self._max_model_len:
            return self.abstain(
                f"chain and question take {prompt_tokens} tokens; the judge's context holds "
                f"{self._max_model_len}"
            )
        result = await self._engine.generate(
            GenerationRequest(prompt=prompt, n=1, max_tokens=1, temperature=0.0, logprobs=JUDGE_TOP_LOGPROBS)
        )
        p_yes = yes_probability(result.first_token_logprobs)
        score, passed, reason = (
            (0.5, None, "the judge answered neither Yes nor No")
            if p_yes is None
            else (p_yes, p_yes >= 0.5, f"judge P(Yes)={p_yes:.2f}")
        )
        return Verdict(
            self.name,
            score,
            passed,
            reason,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=sum(c.token_count for c in result.completions),
            cached_tokens=result.cached_tokens,
        )


def yes_probability(top_logprobs: Iterable[tuple[str, float]]) -> float | None:
    """P(Yes) / (P(Yes) + P(No)) over the first token's alternatives; None if neither appears."""
    yes = no = 0.0
    for token, logprob in top_logprobs:
        word = token.strip().lower()
        if word == "yes":
            yes += math.exp(logprob)
        elif word == "no":
            no += math.exp(logprob)
    return yes / (yes + no) if yes + no > 0 else None
