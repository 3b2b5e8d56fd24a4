"""A scripted engine for driving search logic deterministically (the real one runs in e2e)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

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


@dataclass(frozen=True)
class Proposal:
    """One scripted step: its text, the model's mean token log-probability, how it ended."""

    text: str
    logprob: float = -1.0
    # "step": ended at a stop string (more steps follow); "eos": the model ended the chain.
    ending: str = "step"


@dataclass
class StepScript:
    """Answers step expansions by the path in the prompt, whatever order calls arrive in.

    `proposals` maps the steps so far (a tuple of step texts as the tree stores them) to the
    proposals for the next step; every proposal is one token per word. Unscripted paths get
    no proposals, which a test sees as a failure of the search to stay on the script.
    """

    base_prompt: str
    delimiter: str
    proposals: dict[tuple[str, ...], list[Proposal]]
    requests: list[GenerationRequest] = field(default_factory=list)
    # Whole chains for requests from the root with no stop and no grammar (a probe).
    whole_chains: list[str] = field(default_factory=list)
    # For Game of 24 the stored steps carry "(left: ...)"; the model wrote only what precedes it.
    strip_bookkeeping: bool = True

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        self.requests.append(request)
        path = self.path_of(request.prompt)
        if not path and not request.stop and request.regex is None:
            texts = self.whole_chains[: request.n]
            return GenerationResult(
                tuple(_complete(t, request.max_tokens) for t in texts), 20, 0, replica="scripted"
            )
        scripted = self.proposals.get(path)
        if scripted is None:
            raise AssertionError(f"the search asked for a step after an unscripted path {path}")
        if request.regex is not None:
            # The engine cannot write what the grammar forbids (a step proposed here before);
            # a grammar for the first part of a step (a move) gets the words of each proposal
            # that make it up, and a move in the prompt gets the rest of its proposal.
            scripted = _parts(scripted, request.regex, self.move_of(request.prompt))
        completions = tuple(_proposal(p, request) for p in scripted[: request.n])
        return GenerationResult(completions, prompt_tokens=20, cached_tokens=0, replica="scripted")

    def move_of(self, prompt: str) -> str:
        """What the prompt holds after the last step: a move whose working out is asked for."""
        return prompt[len(self.base_prompt) :].split(self.delimiter)[-1]

    def path_of(self, prompt: str) -> tuple[str, ...]:
        assert prompt.startswith(self.base_prompt), prompt
        rest = prompt[len(self.base_prompt) :]
        steps = rest.split(self.delimiter)[:-1] if rest else []
        if self.strip_bookkeeping:
            steps = [step.split(" (left:")[0] for step in steps]
        return tuple(steps)


def _parts(scripted: Sequence[Proposal], regex: str, move: str) -> list[Proposal]:
    """The proposals, or the parts of them, that the grammar admits (after `move`, if any)."""
    parts = []
    for proposal in scripted:
        if move:
            if not proposal.text.startswith(move):
                continue
            rest = proposal.text[len(move) :]
            candidates = [rest] if re.fullmatch(regex, rest) else []
        else:
            words = proposal.text.split(" ")
            candidates = [" ".join(words[:end]) for end in range(len(words), 0, -1)]
        admitted = next((text for text in candidates if re.fullmatch(regex, text)), None)
        if admitted is not None:
            parts.append(replace(proposal, text=admitted))
    return parts


def _proposal(proposal: Proposal, request: GenerationRequest) -> Completion:
    # The rest of a step after its move starts with a space: part of its first word.
    leading = " " if proposal.text.startswith(" ") else ""
    words = proposal.text.split()[: request.max_tokens]
    ended_at_stop = proposal.ending == "step" and bool(request.stop)
    return Completion(
        leading + " ".join(words),
        len(words),
        "stop",
        cumulative_logprob=proposal.logprob * len(words),
        stop_reason=request.stop[0] if ended_at_stop else None,
    )
