"""Engine calls under the tree's budget: whole chains from the root, or next steps of a node.

Every engine call is paid for from the tree's budget ledger in Redis before it is sent (a
reservation) and settled with the engine's own token counts after, so concurrent planners
can never overspend a tree. What comes back is written to the tree at once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from cluster.config import EffortBudget
from cluster.search.observer import SearchObserver
from cluster.search.tree import Chain, SearchTree
from cluster.store import TOKENS, BudgetLedger, NodeDraft, NodeStatus, Reservation, ThoughtNode
from cluster.tasks.steps import StepFormat, StepRequest
from cluster.types import Completion, GenerationRequest, GenerationResult, SolveRequest, Usage

# A chain shorter than this cannot hold reasoning and an answer; do not start one.
MIN_TOKENS_PER_CHAIN = 16


class Generator(Protocol):
    async def generate(self, request: GenerationRequest) -> GenerationResult: ...


class BudgetExhausted(RuntimeError):
    """Nothing is left of the tree's reasoning budget for another chain."""


class Expander:
    def __init__(
        self,
        request: SolveRequest,
        budget: EffortBudget,
        tree: SearchTree,
        steps: StepFormat,
        ledger: BudgetLedger,
        generator: Generator,
        observer: SearchObserver,
    ) -> None:
        self._request = request
        self._budget = budget
        self._tree = tree
        self._steps = steps
        self._ledger = ledger
        self._generator = generator
        self._observer = observer
        self._started = time.monotonic()
        # Engine tokens of the calls this planner made (a resumed tree adds its predecessor's).
        self.usage = Usage()

    async def tokens_left(self) -> int:
        return (await self._ledger.snapshot(self._request.tree_id)).remaining(TOKENS)

    async def sample_chains(self, n: int, hold_back: int = 0, max_tokens: int | None = None) -> list[Chain]:
        """Grow up to `n` whole chains from the root in one batched engine call.

        `hold_back` tokens of the budget stay unreserved, for verifying these chains later;
        `max_tokens` caps each chain below the effort's max_tokens_per_branch.
        """
        per_chain = min(max_tokens or self._budget.max_tokens_per_branch, self._budget.max_tokens_per_branch)
        want = n * per_chain
        if hold_back:
            remaining = await self.tokens_left()
            # Holding back must not starve the chains themselves: a chain beats a judge.
            spendable = remaining - hold_back if remaining - hold_back >= MIN_TOKENS_PER_CHAIN else remaining
            want = min(want, max(spendable, 0))
        async with self._ledger.reservation(self._request.tree_id, TOKENS, want) as reservation:
            n, max_tokens = _fit_chains(n, reservation.amount, per_chain)
            result = await self._generate(
                reservation, self._request.prompt, n, max_tokens, self._request.seed
            )
        # A whole chain is finished whether or not it stated an answer: nothing grows from it.
        drafts = [
            _draft(completion, result, self._steps.answer(completion.text), "answer")
            for completion in result.completions
        ]
        return await self._record(self._tree.root, drafts, result)

    async def expand(self, node: ThoughtNode, k: int) -> list[Chain]:
        """Propose up to `k` next steps after `node`: sampled in one batched engine call, or,
        greedily, one call per step, each leaving out the steps proposed before it.

        The last step the depth limit allows must end the chain.
        """
        steps = [n.text for n in self._tree.path_to(node)]
        final = len(steps) + 1 >= self._budget.max_depth
        known = {child.text for child in self._tree.children(node)}
        shape = self._steps.request(steps, final, tried=sorted(known))
        if shape is None:
            # Every step the task allows here was proposed already.
            if self._tree.node(node.node_id).status == "open":
                self._tree.set_status([node.node_id], "expanded")
            return []
        if shape.temperature != 0:
            return await self._propose(node, steps, final, shape, k, known)
        # Greedy decoding would repeat one step k times in a batch.
        chains: list[Chain] = []
        while shape is not None and len(chains) < k:
            try:
                proposed = await self._propose(node, steps, final, shape, 1, known)
            except BudgetExhausted:
                if not chains:
                    raise
                break  # the steps already proposed still count
            if not proposed:
                break  # the engine wrote nothing: asking again would not change that
            chains += proposed
            shape = self._steps.request(steps, final, tried=sorted(known))
        return chains

    async def _propose(
        self, node: ThoughtNode, steps: list[str], final: bool, shape: StepRequest, k: int, known: set[str]
    ) -> list[Chain]:
        """`k` proposals after `node` in one engine call; adds their texts to `known`."""
        per_step = self._budget.max_tokens_per_branch if final else self._budget.max_tokens_per_step
        if shape.max_tokens is not None:
            per_step = min(per_step, shape.max_tokens)
        async with self._ledger.reservation(self._request.tree_id, TOKENS, k * per_step) as reservation:
            k, max_tokens = _fit_chains(k, reservation.amount, per_step)
            prompt = self._steps.prompt(self._request.prompt, steps)
            # Each call its own seed: a node expanded again must not repeat its first proposals.
            seed = None if self._request.seed is None else self._request.seed + len(self._tree)
            result = await self._generate(
                reservation, prompt, k, max_tokens, seed, shape.stop, shape.regex, shape.temperature
            )
        # A step already among the siblings adds nothing to grow: it is written (its tokens
        # were spent) but pruned at once.
        drafts: list[NodeDraft] = []
        for completion in result.completions:
            step = self._steps.read(steps, completion, final)
            status: NodeStatus = "open" if not step.terminal else "answer" if step.answer else "pruned"
            drafts.append(
                _draft(completion, result, step.answer, "pruned" if step.text in known else status, step.text)
            )
            known.add(step.text)
        return await self._record(node, drafts, result)

    async def _generate(
        self,
        reservation: Reservation,
        prompt: str,
        n: int,
        max_tokens: int,
        seed: int | None,
        stop: tuple[str, ...] = (),
        regex: str | None = None,
        temperature: float | None = None,
    ) -> GenerationResult:
        result = await self._generator.generate(
            GenerationRequest(
                prompt=prompt,
                n=n,
                max_tokens=max_tokens,
                temperature=self._budget.temperature if temperature is None else temperature,
                top_k=self._budget.top_k,
                seed=seed,
                stop=stop,
                # The sampled tokens' own log-probabilities: the model's confidence in a step.
                logprobs=0,
                regex=regex,
                affinity_key=self._request.tree_id,
                cache_salt=self._request.cache_salt,
            )
        )
        generated = sum(c.token_count for c in result.completions)
        reservation.use(generated)
        # vLLM reports the shared prompt once per batched request: it is prefilled once.
        self.usage += Usage(result.prompt_tokens, generated, result.cached_tokens)
        return result

    async def _record(
        self, parent: ThoughtNode, drafts: Sequence[NodeDraft], result: GenerationResult
    ) -> list[Chain]:
        tokens = sum(c.token_count for c in result.completions)
        self._tree.event("chains", {"count": len(drafts), "tokens": tokens, "replica": result.replica})
        nodes = await self._tree.add_children(parent, drafts)
        if len(self._tree) == len(nodes) + 1:  # the tree held only its root before
            self._observer.first_progress(self._request, time.monotonic() - self._started)
        self._observer.chains_generated(self._request, len(nodes), tokens)
        return [self._tree.chain(node) for node in nodes]


def _draft(
    completion: Completion,
    result: GenerationResult,
    answer: str | None,
    status: NodeStatus,
    text: str | None = None,
) -> NodeDraft:
    mean_logprob = (
        completion.cumulative_logprob / completion.token_count
        if completion.cumulative_logprob is not None and completion.token_count
        else None
    )
    return NodeDraft(
        text=completion.text if text is None else text,
        completion_tokens=completion.token_count,
        prompt_tokens=result.prompt_tokens,
        cached_tokens=result.cached_tokens,
        replica=result.replica,
        answer=answer,
        status=status,
        logprob=mean_logprob,
        finish_reason=completion.finish_reason,
    )


def _fit_chains(n: int, tokens: int, per_chain: int) -> tuple[int, int]:
    """Shrink the expansion to what the reservation covers: fewer chains before shorter ones."""
    affordable = min(n, tokens // per_chain)
    if affordable >= 1:
        return affordable, per_chain
    if tokens >= MIN_TOKENS_PER_CHAIN:
        return 1, tokens
    raise BudgetExhausted(f"only {tokens} reasoning tokens left; a chain needs {MIN_TOKENS_PER_CHAIN}")
