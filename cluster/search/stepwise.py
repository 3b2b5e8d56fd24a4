"""Step-level search in rounds, shared by beam search and DVTS.

Each round scores the open steps, keeps the best of them, and asks the engine for the next
steps of every kept node at once. All of the round's state is the tree in Redis: kept steps
are `open`, dropped ones `pruned`, expanded ones `expanded`. A planner that resumes a tree
picks up the open steps and goes on.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import Sequence

from cluster.search.base import SearchOutcome, SearchStrategy
from cluster.search.context import BudgetExhausted, Chain, SearchContext
from cluster.search.selection import alive, best_first, conclude
from cluster.store import ThoughtNode


class StepwiseSearch(SearchStrategy):
    @abstractmethod
    def root_proposals(self, ctx: SearchContext) -> int:
        """First steps to propose from the root."""

    @abstractmethod
    def proposals(self, ctx: SearchContext) -> int:
        """Next steps to propose from each kept node."""

    @abstractmethod
    def keep(self, ctx: SearchContext, candidates: Sequence[Chain]) -> list[Chain]:
        """The open steps that survive the round (the rest are pruned)."""

    async def run(self, ctx: SearchContext) -> SearchOutcome:
        assert ctx.root is not None
        frontier = [ctx.chain_of(node) for node in ctx.open_nodes()]
        expanding: list[tuple[ThoughtNode, int]] = []
        if not frontier:
            # A fresh tree, or one that holds only whole chains (a probe): start at the root.
            expanding = [(ctx.root, self.root_proposals(ctx))]
        while ctx.solved is None:
            if not expanding:
                await score_unscored(ctx, frontier)
                kept = self.keep(ctx, alive(ctx, frontier))
                await ctx.set_status([c for c in frontier if c not in kept], "pruned")
                expanding = [(c.node, self.proposals(ctx)) for c in kept]
            if not expanding:
                # Every path ended without a verified answer: spend what is left on new ones.
                expanding = [(ctx.root, self.root_proposals(ctx))]
            from_root = all(node.node_id == ctx.root.node_id for node, _ in expanding)
            new = await expand_all(ctx, expanding)
            expanding = []
            if not new and from_root:
                # The budget is spent, or the root has no step left that was not proposed.
                break
            await score(ctx, new)
            frontier = [c for c in new if not c.terminal]
            ranked = best_first(ctx, alive(ctx, new))
            await ctx.progress(max((c.node.depth for c in new), default=0), ranked[0] if ranked else None)
        return conclude(ctx, self.name)


async def expand_all(ctx: SearchContext, expanding: Sequence[tuple[ThoughtNode, int]]) -> list[Chain]:
    """Expand the nodes concurrently (the engine batches them); stop quietly when the budget
    has nothing left for some of them."""
    results = await asyncio.gather(*(ctx.expand(node, k) for node, k in expanding), return_exceptions=True)
    new: list[Chain] = []
    for result in results:
        if isinstance(result, BudgetExhausted):
            continue
        if isinstance(result, BaseException):
            raise result
        new.extend(result)
    return new


async def score(ctx: SearchContext, chains: Sequence[Chain]) -> None:
    """Verify finished chains and unfinished paths apart: only finished ones meet the judge.

    Pruned proposals (repeats of a sibling, broken steps) are not worth a verifier call.
    """
    chains = [c for c in chains if not ctx.pruned(c)]
    finished = [c for c in chains if c.terminal]
    unfinished = [c for c in chains if not c.terminal]
    for group in (finished, unfinished):
        if group:
            await ctx.verify(group)


async def score_unscored(ctx: SearchContext, chains: Sequence[Chain]) -> None:
    """Steps a dead planner wrote but never scored get their scores now."""
    await score(ctx, [c for c in chains if c.node.node_id not in ctx.scores])
