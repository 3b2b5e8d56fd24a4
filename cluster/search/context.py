"""What a search strategy may do: grow chains, have them verified, all inside the budget.

Every engine call is paid for from the tree's budget ledger in Redis before it is sent
(a reservation) and settled with the engine's own token counts after, so concurrent
planners can never overspend a tree. Every chain is written to the tree as it arrives.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from cluster.config import EffortBudget, TaskSettings
from cluster.search.steps import StepFormat, StepRequest, step_format, task_answer
from cluster.store import (
    BudgetLedger,
    NodeDraft,
    NodeStatus,
    Reservation,
    ThoughtNode,
    TreeLeases,
    TreeNotFoundError,
    TreeStore,
)
from cluster.types import (
    Candidate,
    Completion,
    GenerationRequest,
    GenerationResult,
    SolveRequest,
    Usage,
    Verdict,
    VerifyRequest,
    VerifyResult,
)
from cluster.verifiers.base import NEUTRAL_SCORE, checks_steps_only, uses_model

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
    # One planner per tree at a time; None only where a single process owns every tree (tests).
    leases: TreeLeases | None = None


@dataclass(frozen=True, slots=True)
class Chain:
    """A chain of thought ending at a tree node: a whole chain, or the path to a step.

    `text` is the path's steps joined as the model wrote them, `path` the node ids from the
    root, `token_count` the engine's count of every generated token on the path.
    """

    node: ThoughtNode
    answer: str | None
    token_count: int
    finish_reason: str | None
    text: str
    path: tuple[str, ...]
    # Whether anything can still grow from it (tree search); whole chains are finished.
    terminal: bool = True

    def candidate(self) -> Candidate:
        return Candidate(self.node.node_id, self.text, self.answer, self.token_count)


class BudgetExhausted(RuntimeError):
    """Nothing is left of the tree's reasoning budget for another chain."""


class SearchContext:
    def __init__(
        self,
        request: SolveRequest,
        budget: EffortBudget,
        services: SearchServices,
        task_settings: TaskSettings | None = None,
    ) -> None:
        task_settings = task_settings or TaskSettings()
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
        # Set when a program verified an answer as right: no search can do better.
        self.solved: Chain | None = None
        # Nodes whose answer a program checked and found wrong.
        self.refuted: set[str] = set()
        self.steps: StepFormat = step_format(request.problem, task_settings)
        self._nodes: dict[str, ThoughtNode] = {}
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
        self._nodes[root.node_id] = root
        return root

    async def restore(self) -> ThoughtNode:
        """Load the stored tree of a planner that died, to continue its search."""
        tree = await self._store.get_tree(self.tree_id)
        if tree is None:
            raise TreeNotFoundError(self.tree_id)
        roots = [node for node in tree.nodes if node.parent_id is None]
        if not roots:
            return await self.start()
        self.root = roots[0]
        self._nodes = {node.node_id: node for node in tree.nodes}
        # The dead planner's engine work, as its nodes recorded it, is part of this answer's cost.
        self.usage += Usage(completion_tokens=sum(n.completion_tokens for n in tree.nodes))
        for node in tree.nodes:
            if node.parent_id is not None:
                chain = self.chain_of(node)
                self.chains.append(chain)
                if node.score is not None:
                    self.scores[node.node_id] = node.score
        return self.root

    # -- the tree as this search knows it --

    def node(self, node_id: str) -> ThoughtNode:
        return self._nodes[node_id]

    def path_to(self, node: ThoughtNode) -> list[ThoughtNode]:
        """The nodes from the root's first child down to `node`."""
        path = []
        current: ThoughtNode | None = node
        while current is not None and current.parent_id is not None:
            path.append(current)
            current = self._nodes.get(current.parent_id)
        return path[::-1]

    def children_of(self, node: ThoughtNode) -> list[ThoughtNode]:
        return [n for n in self._nodes.values() if n.parent_id == node.node_id]

    def expanded_steps(self) -> list[ThoughtNode]:
        """Unfinished steps that were expanded before (the root is not a step)."""
        return [
            n
            for n in self._nodes.values()
            if n.status == "expanded" and n.parent_id is not None and n.answer is None
        ]

    def open_nodes(self) -> list[ThoughtNode]:
        """Steps waiting to be expanded."""
        return [n for n in self._nodes.values() if n.status == "open" and n.parent_id is not None]

    def chain_of(self, node: ThoughtNode) -> Chain:
        path = self.path_to(node)
        assert self.root is not None
        return Chain(
            node=node,
            answer=node.answer,
            token_count=sum(n.completion_tokens for n in path),
            finish_reason="stop" if node.answer is not None else "length",
            text=self.steps.chain_text([n.text for n in path]),
            path=(self.root.node_id, *(n.node_id for n in path)),
            terminal=node.status != "open",
        )

    def answered(self) -> list[Chain]:
        """Chains that reached an answer and were not pruned (a repeat of a sibling)."""
        return [c for c in self.chains if c.answer is not None and not self.pruned(c)]

    def pruned(self, chain: Chain) -> bool:
        return self._nodes[chain.node.node_id].status == "pruned"

    async def set_status(self, chains: Sequence[Chain], status: NodeStatus) -> None:
        for chain in chains:
            node = await self._store.update_node(self.tree_id, chain.node.node_id, status=status)
            self._nodes[node.node_id] = node

    async def backpropagate(self, path: Sequence[ThoughtNode], value: float) -> None:
        """Count one evaluation of `value` on every node of `path` (MCTS statistics)."""
        await self._store.backpropagate(self.tree_id, [n.node_id for n in path], value)
        for node in path:
            current = self._nodes[node.node_id]
            self._nodes[node.node_id] = replace(
                current, visits=current.visits + 1, value_sum=current.value_sum + value
            )

    async def tokens_left(self) -> int:
        return (await self._ledger.snapshot(self.tree_id)).remaining(TOKENS)

    async def note(self, event: str, **fields: str) -> None:
        """Record a decision of the search on the tree (meta fields) and as an event."""
        await self._store.set_meta_fields(self.tree_id, **fields)
        await self._store.append_event(self.tree_id, event, dict(fields))

    async def notes(self) -> dict[str, str]:
        meta = await self._store.get_meta(self.tree_id)
        return dict(meta.extra) if meta is not None else {}

    async def progress(self, depth: int, best: Chain | None) -> None:
        """A progress event: the best path so far and how much was explored and pruned."""
        pruned = sum(1 for n in self._nodes.values() if n.status == "pruned")
        steps = [n.text for n in self.path_to(best.node)] if best is not None else []
        await self._store.append_event(
            self.tree_id,
            "progress",
            {
                "depth": depth,
                "best_path": [step[:200] for step in steps],
                "explored": len(self.chains),
                "pruned": pruned,
                "best_score": self.scores.get(best.node.node_id) if best is not None else None,
            },
        )

    def verification_tokens(self, chains: int) -> int:
        """Reasoning tokens the effort's verifiers will need to judge this many chains."""
        return JUDGE_TOKENS_PER_CALL * chains if "judge" in self.budget.verifiers else 0

    async def sample_chains(self, n: int, hold_back: int = 0, max_tokens: int | None = None) -> list[Chain]:
        """Grow up to `n` whole chains from the root in one batched engine call.

        `hold_back` tokens of the budget stay unreserved, for verifying these chains later;
        `max_tokens` caps each chain below the effort's max_tokens_per_branch.
        """
        if self.root is None:
            raise RuntimeError("start() the search before sampling")
        per_chain = min(max_tokens or self.budget.max_tokens_per_branch, self.budget.max_tokens_per_branch)
        want = n * per_chain
        if hold_back:
            remaining = (await self._ledger.snapshot(self.tree_id)).remaining(TOKENS)
            # Holding back must not starve the chains themselves: a chain beats a judge.
            spendable = remaining - hold_back if remaining - hold_back >= MIN_TOKENS_PER_CHAIN else remaining
            want = min(want, max(spendable, 0))
        async with self._ledger.reservation(self.tree_id, TOKENS, want) as reservation:
            n, max_tokens = _fit_chains(n, reservation.amount, per_chain)
            result = await self._generate(reservation, self.request.prompt, n, max_tokens, self.request.seed)
        answers = [task_answer(self.request.problem, c.text) for c in result.completions]
        # A whole chain is finished whether or not it stated an answer: nothing grows from it.
        drafts = [
            _draft(completion, result, answer, "answer")
            for completion, answer in zip(result.completions, answers, strict=True)
        ]
        return await self._record(self.root, drafts, result)

    async def expand(self, node: ThoughtNode, k: int) -> list[Chain]:
        """Propose up to `k` next steps after `node`: sampled in one batched engine call, or,
        greedily, one call per step, each leaving out the steps proposed before it.

        The last step the depth limit allows must end the chain.
        """
        steps = [n.text for n in self.path_to(node)]
        final = len(steps) + 1 >= self.budget.max_depth
        known = {child.text for child in self.children_of(node)}
        shape = self.steps.request(steps, final, tried=sorted(known))
        if shape is None:
            # Every step the task allows here was proposed already.
            if node.status == "open":
                await self.set_status([self.chain_of(node)], "expanded")
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
            shape = self.steps.request(steps, final, tried=sorted(known))
        return chains

    async def _propose(
        self, node: ThoughtNode, steps: list[str], final: bool, shape: StepRequest, k: int, known: set[str]
    ) -> list[Chain]:
        """`k` proposals after `node` in one engine call; adds their texts to `known`."""
        per_step = self.budget.max_tokens_per_branch if final else self.budget.max_tokens_per_step
        if shape.max_tokens is not None:
            per_step = min(per_step, shape.max_tokens)
        async with self._ledger.reservation(self.tree_id, TOKENS, k * per_step) as reservation:
            k, max_tokens = _fit_chains(k, reservation.amount, per_step)
            prompt = self.steps.prompt(self.request.prompt, steps)
            # Each call its own seed: a node expanded again must not repeat its first proposals.
            seed = None if self.request.seed is None else self.request.seed + len(self.chains) + 1
            result = await self._generate(
                reservation, prompt, k, max_tokens, seed, shape.stop, shape.regex, shape.temperature
            )
        # A step already among the siblings adds nothing to grow: it is written (its tokens
        # were spent) but pruned at once.
        drafts: list[NodeDraft] = []
        for completion in result.completions:
            step = self.steps.read(steps, completion, final)
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
                temperature=self.budget.temperature if temperature is None else temperature,
                top_k=self.budget.top_k,
                seed=seed,
                stop=stop,
                # The sampled tokens' own log-probabilities: the model's confidence in a step.
                logprobs=0,
                regex=regex,
                affinity_key=self.tree_id,
            )
        )
        reservation.use(sum(c.token_count for c in result.completions))
        # vLLM reports the shared prompt once per batched request: it is prefilled once.
        self.usage += Usage(
            prompt_tokens=result.prompt_tokens,
            completion_tokens=sum(c.token_count for c in result.completions),
            cached_tokens=result.cached_tokens,
        )
        return result

    async def _record(
        self, parent: ThoughtNode, drafts: Sequence[NodeDraft], result: GenerationResult
    ) -> list[Chain]:
        nodes = await self._store.add_nodes(self.tree_id, parent.node_id, drafts)
        if parent.status == "open":
            self._nodes[parent.node_id] = replace(parent, status="expanded")
        self._nodes.update((node.node_id, node) for node in nodes)
        chains = [self.chain_of(node) for node in nodes]
        self.chains.extend(chains)
        tokens = sum(c.token_count for c in result.completions)
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

    async def verify(self, chains: Sequence[Chain]) -> list[float]:
        """Score chains with the effort's verifiers; chains past the call budget stay neutral.

        Unfinished paths have no answer yet: only the verifiers of steps score them.
        """
        unfinished = any(not c.terminal for c in chains)
        names = tuple(v for v in self.budget.verifiers if not unfinished or checks_steps_only(v))
        if not chains or not names:
            return [NEUTRAL_SCORE] * len(chains)
        async with self._ledger.reservation(self.tree_id, VERIFIER_CALLS, len(chains)) as calls:
            judged = list(chains[: calls.amount])
            wanted = self.verification_tokens(len(judged)) if names == self.budget.verifiers else 0
            async with self._ledger.reservation(self.tree_id, TOKENS, wanted) as tokens:
                verifiers = names
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
        node = await self._store.update_node(
            self.tree_id,
            chain.node.node_id,
            score=score,
            scores={v.verifier: v.score for v in verdicts if v.passed is not None},
        )
        self._nodes[node.node_id] = node
        if not chain.terminal and _found_wrong(verdicts, of_answer=False):
            # A wrong step: nothing that grows from it can be right.
            await self.set_status([chain], "pruned")
        if chain.answer is not None and _found_wrong(verdicts, of_answer=True):
            self.refuted.add(node.node_id)
        if self.solved is None and chain.answer is not None and _proven(verdicts):
            self.solved = chain
        return score


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


def _proven(verdicts: Sequence[Verdict]) -> bool:
    """A program (not a model's opinion) checked the answer and found it right."""
    return any(v.passed and v.judges_answer and not uses_model(v.verifier) for v in verdicts)


def _found_wrong(verdicts: Sequence[Verdict], *, of_answer: bool) -> bool:
    """A program (not a model's opinion) checked the answer (or the steps) and found it wrong."""
    return any(
        v.passed is False and v.judges_answer == of_answer and not uses_model(v.verifier) for v in verdicts
    )


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


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
    )


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
