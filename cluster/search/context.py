"""What a search strategy may do: grow chains, have them verified, all inside the budget.

Every engine call is paid for from the tree's budget ledger in Redis before it is sent
(a reservation) and settled with the engine's own token counts after, so concurrent
planners can never overspend a tree. Every chain is written to the tree as it arrives.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cluster.answers import extract_answer
from cluster.config import EffortBudget
from cluster.store import BudgetLedger, NodeDraft, ThoughtNode, TreeStore
from cluster.types import (
    Candidate,
    GenerationRequest,
    GenerationResult,
    Problem,
    SolveRequest,
    TaskFamily,
    Usage,
    Verdict,
    VerifyRequest,
    VerifyResult,
)
from cluster.verifiers.base import NEUTRAL_SCORE
from cluster.verifiers.game24 import extract_game24_expression

TOKENS = "tokens"
VERIFIER_CALLS = "verifier_calls"
# A chain shorter than this cannot hold reasoning and an answer; do not start one.
MIN_TOKENS_PER_CHAIN = 16
# Model judges answer with one token ("Yes"/"No"), read from its log-probabilities.
JUDGE_TOKENS_PER_CALL = 1


class Generator(Protocol):
    async def generate(self, request: GenerationRequest) -> GenerationResult: ...


class VerifierService(Protocol):
    async def verify(self, request: VerifyRequest) -> VerifyResult: ...


class SearchObserver:
    """Hooks a search calls as it goes; the default does nothing.

    `cluster` knows nothing of metrics: the planner deployment passes in an observer
    (monitoring.metrics implements one) that turns these calls into Prometheus metrics.
    Observers must be cheap and must never raise.
    """

    def first_progress(self, request: SolveRequest, elapsed_s: float) -> None:
        """The first chains of the tree are written (its first progress event)."""

    def chains_generated(self, request: SolveRequest, count: int, tokens: int) -> None:
        """One expansion came back with `count` chains of `tokens` tokens in all."""

    def chains_verified(self, request: SolveRequest, count: int) -> None:
        """`count` chains were scored by the verifiers."""

    def search_finished(
        self,
        request: SolveRequest,
        strategy: str,
        outcome: str,
        nodes: int,
        depth: int,
        discarded: int,
        elapsed_s: float,
    ) -> None:
        """The search ended: `outcome` is done, failed, deadline or cancelled; `discarded`
        chains were grown but not chosen (the pruned branches of a finished tree)."""


NULL_OBSERVER = SearchObserver()


@dataclass(frozen=True, slots=True)
class SearchServices:
    """What every search runs on: the tree and its ledger in Redis, the engine, the verifiers."""

    store: TreeStore
    ledger: BudgetLedger
    generator: Generator
    verifier: VerifierService
    observer: SearchObserver = NULL_OBSERVER


@dataclass(frozen=True, slots=True)
class Chain:
    """One complete chain of thought: its tree node and the answer extracted from it."""

    node: ThoughtNode
    answer: str | None
    token_count: int
    finish_reason: str | None

    def candidate(self) -> Candidate:
        return Candidate(self.node.node_id, self.node.text, self.answer, self.token_count)


class BudgetExhausted(RuntimeError):
    """Nothing is left of the tree's reasoning budget for another chain."""


class SearchContext:
    def __init__(
        self,
        request: SolveRequest,
        budget: EffortBudget,
        services: SearchServices,
    ) -> None:
        self.request = request
        self.budget = budget
        self.observer = services.observer
        self._store = services.store
        self._ledger = services.ledger
        self._generator = services.generator
        self._verifier = services.verifier
        self.usage = Usage()
        self.chains: list[Chain] = []
        self.scores: dict[str, float] = {}
        self.verifier_calls = 0
        self.verifier_completion_tokens = 0
        self.root: ThoughtNode | None = None
        self._started = time.monotonic()

    @property
    def tree_id(self) -> str:
        return self.request.tree_id

    def elapsed_s(self) -> float:
        return time.monotonic() - self._started

    async def start(self) -> ThoughtNode:
        """Write the root node: the problem as posed to the model."""
        (root,) = await self._store.add_nodes(
            self.tree_id, None, [NodeDraft(text=self.request.problem.question, status="expanded")]
        )
        self.root = root
        return root

    def verification_tokens(self, chains: int) -> int:
        """Reasoning tokens the effort's verifiers will need to judge this many chains."""
        return JUDGE_TOKENS_PER_CALL * chains if "judge" in self.budget.verifiers else 0

    async def sample_chains(self, n: int, hold_back: int = 0) -> list[Chain]:
        """Grow up to `n` chains from the root in one batched engine call.

        `hold_back` tokens of the budget stay unreserved, for verifying these chains later.
        """
        if self.root is None:
            raise RuntimeError("start() the search before sampling")
        want = n * self.budget.max_tokens_per_branch
        if hold_back:
            remaining = (await self._ledger.snapshot(self.tree_id)).remaining(TOKENS)
            # Holding back must not starve the chains themselves: a chain beats a judge.
            spendable = remaining - hold_back if remaining - hold_back >= MIN_TOKENS_PER_CHAIN else remaining
            want = min(want, max(spendable, 0))
        async with self._ledger.reservation(self.tree_id, TOKENS, want) as reservation:
            n, max_tokens = _fit_chains(n, reservation.amount, self.budget.max_tokens_per_branch)
            result = await self._generator.generate(
                GenerationRequest(
                    prompt=self.request.prompt,
                    n=n,
                    max_tokens=max_tokens,
                    temperature=self.budget.temperature,
                    top_k=self.budget.top_k,
                    seed=self.request.seed,
                )
            )
            reservation.use(sum(c.token_count for c in result.completions))
        chains = await self._record_chains(result)
        tokens = sum(c.token_count for c in chains)
        await self._store.append_event(
            self.tree_id, "chains", {"count": len(chains), "tokens": tokens, "replica": result.replica}
        )
        if len(self.chains) == len(chains):
            self.observer.first_progress(self.request, self.elapsed_s())
        self.observer.chains_generated(self.request, len(chains), tokens)
        return chains

    def tree_shape(self) -> tuple[int, int]:
        """Nodes written so far (the root included) and the deepest node's depth."""
        nodes = (1 if self.root is not None else 0) + len(self.chains)
        depth = max((c.node.depth for c in self.chains), default=0)
        return nodes, depth

    async def _record_chains(self, result: GenerationResult) -> list[Chain]:
        assert self.root is not None
        # vLLM reports the shared prompt once per batched request: it is prefilled once.
        self.usage += Usage(
            prompt_tokens=result.prompt_tokens,
            completion_tokens=sum(c.token_count for c in result.completions),
            cached_tokens=result.cached_tokens,
        )
        answers = [task_answer(self.request.problem, c.text) for c in result.completions]
        drafts = [
            NodeDraft(
                text=completion.text,
                completion_tokens=completion.token_count,
                prompt_tokens=result.prompt_tokens,
                cached_tokens=result.cached_tokens,
                replica=result.replica,
                answer=answer,
                status="answer" if answer is not None else "open",
            )
            for completion, answer in zip(result.completions, answers, strict=True)
        ]
        nodes = await self._store.add_nodes(self.tree_id, self.root.node_id, drafts)
        chains = [
            Chain(node, answer, completion.token_count, completion.finish_reason)
            for node, answer, completion in zip(nodes, answers, result.completions, strict=True)
        ]
        self.chains.extend(chains)
        return chains

    async def verify(self, chains: Sequence[Chain]) -> list[float]:
        """Score chains with the effort's verifiers; chains past the call budget stay neutral."""
        if not chains or not self.budget.verifiers:
            return [NEUTRAL_SCORE] * len(chains)
        async with self._ledger.reservation(self.tree_id, VERIFIER_CALLS, len(chains)) as calls:
            judged = list(chains[: calls.amount])
            wanted = self.verification_tokens(len(judged))
            async with self._ledger.reservation(self.tree_id, TOKENS, wanted) as tokens:
                verifiers = self.budget.verifiers
                if tokens.amount < wanted:
                    # The budget cannot pay the model judge: the programs still judge.
                    verifiers = tuple(v for v in verifiers if v != "judge")
                result = await self._verifier.verify(
                    VerifyRequest(self.request.problem, tuple(c.candidate() for c in judged), verifiers)
                )
                spent = sum(v.completion_tokens for vs in result.verdicts for v in vs)
                tokens.use(spent)
            calls.use(len(judged))
        self.verifier_calls += len(judged)
        self.verifier_completion_tokens += spent
        self.observer.chains_verified(self.request, len(judged))
        self.usage += _verdict_usage(result)
        scores = [await self._record_verdicts(c, vs) for c, vs in zip(judged, result.verdicts, strict=True)]
        return scores + [NEUTRAL_SCORE] * (len(chains) - len(judged))

    async def _record_verdicts(self, chain: Chain, verdicts: Sequence[Verdict]) -> float:
        score = combined_score(verdicts)
        self.scores[chain.node.node_id] = score
        await self._store.update_node(
            self.tree_id,
            chain.node.node_id,
            score=score,
            scores={v.verifier: v.score for v in verdicts if v.passed is not None},
        )
        return score


def task_answer(problem: Problem, text: str) -> str | None:
    """The final answer in the task family's own format (Game of 24: the expression)."""
    if problem.task is TaskFamily.GAME24:
        return extract_game24_expression(text)
    return extract_answer(text)


# Share of a chain's score that its steps decide once its answer has been judged.
STEP_WEIGHT = 0.1


def combined_score(verdicts: Sequence[Verdict]) -> float:
    """The answer verdicts decide; step verdicts refine them (or decide alone, if nothing else spoke).

    Neutral when no verifier could judge.
    """
    answer = _mean([v.score for v in verdicts if v.passed is not None and v.judges_answer])
    steps = _mean([v.score for v in verdicts if v.passed is not None and not v.judges_answer])
    if answer is None:
        return steps if steps is not None else NEUTRAL_SCORE
    return (1 - STEP_WEIGHT) * answer + STEP_WEIGHT * (steps if steps is not None else NEUTRAL_SCORE)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _fit_chains(n: int, tokens: int, per_chain: int) -> tuple[int, int]:
    """Shrink the expansion to what the reservation covers: fewer chains before shorter ones."""
    affordable = min(n, tokens // per_chain)
    if affordable >= 1:
        return affordable, per_chain
    if tokens >= MIN_TOKENS_PER_CHAIN:
        return 1, tokens
    raise BudgetExhausted(f"only {tokens} reasoning tokens left; a chain needs {MIN_TOKENS_PER_CHAIN}")


def _verdict_usage(result: VerifyResult) -> Usage:
    usage = Usage()
    for verdicts in result.verdicts:
        for v in verdicts:
            usage += Usage(v.prompt_tokens, v.completion_tokens, v.cached_tokens)
    return usage
