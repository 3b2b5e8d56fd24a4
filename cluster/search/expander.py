"""Engine calls under the tree's budget: whole chains from the root, or next steps of a node.

Every engine call is paid for from the tree's budget ledger in Redis before it is sent (a
reservation) and settled with the engine's own token counts after, so concurrent planners
can never overspend a tree. What comes back is written to the tree at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from cluster.config import EffortBudget
from cluster.search.observer import SearchObserver
from cluster.search.tree import Chain, SearchTree
from cluster.store import TOKENS, BudgetLedger, NodeDraft, NodeStatus, Reservation, ThoughtNode
from cluster.tasks.steps import StepChoice, StepFormat, StepRequest
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
        return await self._record(self._tree.root, drafts, _tokens(result), result.replica)

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
        # Greedy decoding would repeat one step k times in a batch: the steps go in two parts
        # where the format allows and the effort samples (k moves sampled at once, each worked
        # out greedily), else one call per step, each leaving out the steps proposed before it.
        chains: list[Chain] = []
        in_two_parts = shape.choice is not None and self._budget.temperature > 0
        while shape is not None and len(chains) < k:
            try:
                wanted = k - len(chains) if in_two_parts else 1
                proposed = await self._propose(node, steps, final, shape, wanted, known, in_two_parts)
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
        self,
        node: ThoughtNode,
        steps: list[str],
        final: bool,
        shape: StepRequest,
        k: int,
        known: set[str],
        in_two_parts: bool = False,
    ) -> list[Chain]:
        """`k` proposals after `node` in one engine call, or in two rounds of calls where
        `in_two_parts` and the budget affords more than one; adds their texts to `known`."""
        per_step = self._budget.max_tokens_per_branch if final else self._budget.max_tokens_per_step
        if shape.max_tokens is not None:
            per_step = min(per_step, shape.max_tokens)
        async with self._ledger.reservation(self._request.tree_id, TOKENS, k * per_step) as reservation:
            k, max_tokens = _fit_chains(k, reservation.amount, per_step)
            call = _Call(
                reservation,
                self._steps.prompt(self._request.prompt, steps),
                max_tokens,
                # Each call its own seed: a node expanded again must not repeat its first proposals.
                None if self._request.seed is None else self._request.seed + len(self._tree),
            )
            if in_two_parts and shape.choice is not None and k > 1:
                return await self._propose_in_two_parts(node, steps, final, shape.choice, k, known, call)
            result = await self._generate(
                reservation, call.prompt, k, max_tokens, call.seed, shape.stop, shape.regex, shape.temperature
            )
        drafts = [
            self._step_draft(steps, final, completion, result, known) for completion in result.completions
        ]
        return await self._record(node, drafts, _tokens(result), result.replica)

    async def _propose_in_two_parts(
        self,
        node: ThoughtNode,
        steps: list[str],
        final: bool,
        choice: StepChoice,
        k: int,
        known: set[str],
        call: _Call,
    ) -> list[Chain]:
        """`k` moves after `node` sampled in one engine call, then each distinct move worked
        out greedily, all at once, each step within `call.max_tokens`. A move sampled twice is
        worked out once; both samples' tokens are its node's."""
        move_tokens = min(choice.max_tokens, call.max_tokens)
        moves = await self._generate(
            call.reservation, call.prompt, k, move_tokens, call.seed, regex=choice.regex
        )
        samples: dict[str, list[Completion]] = {}
        for completion in moves.completions:
            samples.setdefault(completion.text, []).append(completion)
        # Each move's node is written as soon as it is worked out: a deadline that cancels the
        # rest keeps the steps that were finished.
        working = {
            asyncio.ensure_future(self._work_out(call, same[0], choice)): move
            for move, same in samples.items()
        }
        chains: list[Chain] = []
        try:
            while working:
                finished, _ = await asyncio.wait(working, return_when=asyncio.FIRST_COMPLETED)
                # In the order the moves were sampled: a seeded search writes the same tree.
                for task in [task for task in working if task in finished]:
                    same, rest = samples[working.pop(task)], task.result()
                    step = same[0] if rest is None else _joined(same[0], rest)
                    draft = self._step_draft(steps, final, step, moves, known, _tokens_of(same[1:]))
                    tokens = _tokens_of(same) + (0 if rest is None else rest.token_count)
                    chains += await self._record(node, [draft], tokens, moves.replica)
        finally:
            for task in working:
                task.cancel()
        return chains

    async def _work_out(self, call: _Call, move: Completion, choice: StepChoice) -> Completion | None:
        """The move's working out, greedily; None when the move used the step's tokens up or
        the engine wrote nothing."""
        max_tokens = min(choice.rest_max_tokens, call.max_tokens - move.token_count)
        if max_tokens <= 0:
            return None
        rest = await self._generate(
            call.reservation,
            call.prompt + move.text,
            1,
            max_tokens,
            call.seed,
            regex=choice.rest_regex,
            temperature=0.0,
        )
        return rest.completions[0] if rest.completions else None

    def _step_draft(
        self,
        steps: list[str],
        final: bool,
        completion: Completion,
        result: GenerationResult,
        known: set[str],
        repeated_tokens: int = 0,
    ) -> NodeDraft:
        """A proposed step as the tree stores it. A step already among the siblings adds nothing
        to grow: it is written (its tokens were spent) but pruned at once. `repeated_tokens`:
        what samples of the same move cost, counted on this node."""
        step = self._steps.read(steps, completion, final)
        status: NodeStatus = "open" if not step.terminal else "answer" if step.answer else "pruned"
        draft = _draft(completion, result, step.answer, "pruned" if step.text in known else status, step.text)
        draft = replace(draft, completion_tokens=draft.completion_tokens + repeated_tokens)
        known.add(step.text)
        return draft

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
        generated = _tokens(result)
        reservation.use(generated)
        # vLLM reports the shared prompt once per batched request: it is prefilled once.
        self.usage += Usage(result.prompt_tokens, generated, result.cached_tokens)
        return result

    async def _record(
        self, parent: ThoughtNode, drafts: Sequence[NodeDraft], tokens: int, replica: str
    ) -> list[Chain]:
        self._tree.event("chains", {"count": len(drafts), "tokens": tokens, "replica": replica})
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


@dataclass(frozen=True, slots=True)
class _Call:
    """What the engine calls of one proposal share: the reservation, the prompt, each step's
    token cap and the seed."""

    reservation: Reservation
    prompt: str
    max_tokens: int
    seed: int | None


def _tokens(result: GenerationResult) -> int:
    return _tokens_of(result.completions)


def _tokens_of(completions: Sequence[Completion]) -> int:
    return sum(c.token_count for c in completions)


def _joined(move: Completion, rest: Completion) -> Completion:
    """A move and its working out as one step."""
    logprob = (
        None
        if move.cumulative_logprob is None or rest.cumulative_logprob is None
        else move.cumulative_logprob + rest.cumulative_logprob
    )
    return Completion(
        move.text + rest.text,
        move.token_count + rest.token_count,
        rest.finish_reason,
        logprob,
        rest.stop_reason,
    )


def _fit_chains(n: int, tokens: int, per_chain: int) -> tuple[int, int]:
    """Shrink the expansion to what the reservation covers: fewer chains before shorter ones."""
    affordable = min(n, tokens // per_chain)
    if affordable >= 1:
        return affordable, per_chain
    if tokens >= MIN_TOKENS_PER_CHAIN:
        return 1, tokens
    raise BudgetExhausted(f"only {tokens} reasoning tokens left; a chain needs {MIN_TOKENS_PER_CHAIN}")
