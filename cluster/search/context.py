"""What a search strategy works with: the tree, the expander, the scorer, inside one budget.

The context only wires the parts together for one request; each part owns one concern
(`tree.py` the indexed tree and its persistence, `expander.py` engine calls under the
budget, `scoring.py` verification and scores) and strategies talk to them directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster.config import EffortBudget
from cluster.search.expander import Expander, Generator
from cluster.search.observer import NULL_OBSERVER, SearchObserver
from cluster.search.scoring import Scorer, VerifierService
from cluster.search.tree import Chain, SearchTree
from cluster.store import BudgetLedger, TreeLeases, TreeStore
from cluster.tasks import get_task
from cluster.tasks.steps import StepFormat
from cluster.types import SolveRequest, Usage

# Progress events show this much of each step of the best path.
PROGRESS_STEP_CHARS = 200


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


class SearchContext:
    def __init__(
        self,
        request: SolveRequest,
        budget: EffortBudget,
        services: SearchServices,
        steps: StepFormat,
        fence: str | None = None,
    ) -> None:
        self.request = request
        self.budget = budget
        self.task = get_task(request.problem.task)
        self.observer = services.observer
        self._store = services.store
        self.tree = SearchTree(request.tree_id, services.store, steps, fence)
        self.expander = Expander(
            request, budget, self.tree, steps, services.ledger, services.generator, services.observer
        )
        self.scorer = Scorer(
            request, budget, self.tree, services.ledger, services.verifier, services.observer
        )
        # Engine work of a dead planner whose tree this one resumed.
        self.inherited = Usage()
        self._fence = fence

    @property
    def tree_id(self) -> str:
        return self.request.tree_id

    @property
    def usage(self) -> Usage:
        return self.inherited + self.expander.usage + self.scorer.usage

    async def resume(self) -> bool:
        """Load the tree of a planner that died; False when it never wrote its root."""
        if not await self.tree.load():
            return False
        # The dead planner's engine work, as its nodes recorded it, is part of this answer's cost.
        self.inherited = Usage(completion_tokens=sum(n.completion_tokens for n in self.tree.steps()))
        self.scorer.restore()
        return True

    def chains(self) -> list[Chain]:
        """Every chain grown so far (one per node but the root), in creation order."""
        return [self.tree.chain(node) for node in self.tree.steps()]

    def answered(self) -> list[Chain]:
        """Chains that reached an answer and were not pruned (a repeat of a sibling)."""
        return [c for c in self.chains() if c.answer is not None and not self.tree.pruned(c)]

    async def note(self, event: str, **fields: str) -> None:
        """Record a decision of the search on the tree (meta fields) and as an event."""
        await self._store.set_meta_fields(self.tree_id, fence=self._fence, **fields)
        self.tree.event(event, dict(fields))
        await self.tree.flush()

    async def notes(self) -> dict[str, str]:
        meta = await self._store.get_meta(self.tree_id)
        return dict(meta.extra) if meta is not None else {}

    async def progress(self, depth: int, best: Chain | None) -> None:
        """A progress event: the best path so far and how much was explored and pruned."""
        steps = [n.text for n in self.tree.path_to(best.node)] if best is not None else []
        self.tree.event(
            "progress",
            {
                "depth": depth,
                "best_path": [step[:PROGRESS_STEP_CHARS] for step in steps],
                "explored": len(self.tree) - 1,
                "pruned": self.tree.count("pruned"),
                "best_score": self.scorer.scores.get(best.node.node_id) if best is not None else None,
            },
        )
        await self.tree.flush()

    def shape(self) -> tuple[int, int]:
        """Nodes written so far (the root included) and the deepest node's depth."""
        return len(self.tree), self.tree.deepest
