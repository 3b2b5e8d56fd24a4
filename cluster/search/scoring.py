"""Scoring: verifier calls under the budget, and how their verdicts become a path's score.

Two named, configurable steps (`EffortBudget.scoring`), after search-and-learn:
- a node's own score combines its verdicts: the answer verdicts decide, step verdicts refine
  them by `step_weight` (or decide alone, when nothing judged the answer);
- a path's score aggregates the own scores of its steps: `last` (the newest step's, which
  already judged the whole path), `min`, `mean` or `prod`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from statistics import fmean
from typing import Protocol

from cluster.config import EffortBudget, ScoringSettings
from cluster.search.observer import SearchObserver
from cluster.search.tree import Chain, SearchTree
from cluster.store import TOKENS, VERIFIER_CALLS, BudgetLedger
from cluster.tasks import verifiers_for
from cluster.types import SolveRequest, Usage, Verdict, VerifyRequest, VerifyResult
from cluster.verifiers.base import NEUTRAL_SCORE, describe

AGGREGATIONS: dict[str, Callable[[Sequence[float]], float]] = {
    "last": lambda scores: scores[-1],
    "min": min,
    "mean": fmean,
    "prod": math.prod,
}


class VerifierService(Protocol):
    async def verify(self, request: VerifyRequest) -> VerifyResult: ...


def combined_score(verdicts: Sequence[Verdict], step_weight: float = ScoringSettings().step_weight) -> float:
    """The answer verdicts decide; step verdicts refine them (or decide alone, if nothing else spoke).

    Neutral when no verifier could judge.
    """
    answer = _mean([v.score for v in verdicts if v.passed is not None and v.judges_answer])
    steps = _mean([v.score for v in verdicts if v.passed is not None and not v.judges_answer])
    if answer is None:
        return steps if steps is not None else NEUTRAL_SCORE
    return (1 - step_weight) * answer + step_weight * (steps if steps is not None else NEUTRAL_SCORE)


class Scorer:
    def __init__(
        self,
        request: SolveRequest,
        budget: EffortBudget,
        tree: SearchTree,
        ledger: BudgetLedger,
        verifier: VerifierService,
        observer: SearchObserver,
    ) -> None:
        self._request = request
        self._budget = budget
        self._tree = tree
        self._ledger = ledger
        self._verifier = verifier
        self._observer = observer
        self._aggregate = AGGREGATIONS[budget.scoring.aggregation]
        self._verifiers = verifiers_for(budget.verifiers, request.problem.task)
        # Path scores of the nodes scored so far, by node id.
        self.scores: dict[str, float] = {}
        self.calls = 0
        self.usage = Usage()
        # Set when a program verified an answer as right: no search can do better.
        self.solved: Chain | None = None
        # Nodes whose answer a program checked and found wrong.
        self.refuted: set[str] = set()

    def score_of(self, chain: Chain) -> float:
        return self.scores.get(chain.node.node_id, NEUTRAL_SCORE)

    def judge_tokens(self, chains: int) -> int:
        """Reasoning tokens the effort's model verifiers will need to judge this many chains."""
        return chains * sum(describe(name).tokens_per_call for name in self._verifiers)

    def restore(self) -> None:
        """Path scores of a stored tree's scored nodes (a planner taking over a tree)."""
        for node in self._tree.steps():
            if node.score is not None:
                self.scores[node.node_id] = self._path_score(self._tree.chain(node))

    async def verify(self, chains: Sequence[Chain]) -> list[float]:
        """Score chains with the effort's verifiers; chains past the call budget stay neutral.

        Unfinished paths have no answer yet: only the verifiers of steps score them.
        """
        unfinished = any(not c.terminal for c in chains)
        names = tuple(v for v in self._verifiers if not unfinished or not describe(v).judges_answer)
        if not chains or not names:
            return [NEUTRAL_SCORE] * len(chains)
        tree_id = self._request.tree_id
        async with self._ledger.reservation(tree_id, VERIFIER_CALLS, len(chains)) as calls:
            judged = list(chains[: calls.amount])
            wanted = len(judged) * sum(describe(name).tokens_per_call for name in names)
            async with self._ledger.reservation(tree_id, TOKENS, wanted) as tokens:
                if tokens.amount < wanted:
                    # The budget cannot pay the model verifiers: the programs still judge.
                    names = tuple(name for name in names if describe(name).kind == "program")
                result = await self._verifier.verify(
                    VerifyRequest(self._request.problem, tuple(c.candidate() for c in judged), names)
                )
                spent = sum(v.completion_tokens for vs in result.verdicts for v in vs)
                tokens.use(spent)
            calls.use(len(judged))
        self.calls += len(judged)
        self._observer.chains_verified(self._request, len(judged))
        self.usage += _verdict_usage(result)
        # Recorded on the tree; sent with the search's next write (its progress event at the latest).
        scores = [self._record(c, vs) for c, vs in zip(judged, result.verdicts, strict=True)]
        return scores + [NEUTRAL_SCORE] * (len(chains) - len(judged))

    def _record(self, chain: Chain, verdicts: Sequence[Verdict]) -> float:
        own = combined_score(verdicts, self._budget.scoring.step_weight)
        judged = [v for v in verdicts if v.passed is not None]
        node = self._tree.record_scores(
            chain.node.node_id,
            own,
            {v.verifier: v.score for v in judged},
            {v.verifier: v.reason for v in verdicts},
        )
        score = self._path_score(self._tree.chain(node))
        self.scores[node.node_id] = score
        if not chain.terminal and _found_wrong(verdicts, of_answer=False):
            # A wrong step: nothing that grows from it can be right.
            self._tree.set_status([node.node_id], "pruned")
        if chain.answer is not None and _found_wrong(verdicts, of_answer=True):
            self.refuted.add(node.node_id)
        if self.solved is None and chain.answer is not None and _proven(verdicts):
            self.solved = chain
        return score

    def _path_score(self, chain: Chain) -> float:
        steps = [node.score for node in self._tree.path_to(chain.node) if node.score is not None]
        return self._aggregate(steps) if steps else NEUTRAL_SCORE


def _proven(verdicts: Sequence[Verdict]) -> bool:
    """A verifier that can prove (a program, not a model's opinion) found the answer right."""
    return any(v.passed and v.judges_answer and describe(v.verifier).proves for v in verdicts)


def _found_wrong(verdicts: Sequence[Verdict], *, of_answer: bool) -> bool:
    """A verifier that can refute found the answer (or the steps) wrong."""
    return any(
        v.passed is False and v.judges_answer == of_answer and describe(v.verifier).refutes for v in verdicts
    )


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _verdict_usage(result: VerifyResult) -> Usage:
    usage = Usage()
    for verdicts in result.verdicts:
        for v in verdicts:
            usage += Usage(v.prompt_tokens, v.completion_tokens, v.cached_tokens)
    return usage
