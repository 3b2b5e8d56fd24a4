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
from cluster.search.context import SearchContext
from cluster.search.expander import BudgetExhausted
from cluster.search.selection import alive, best_first, conclude
from cluster.search.tree import Chain
from cluster.store import ThoughtNode


class StepwiseSearch(SearchStrategy):
    grows_tree = True

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
        tree = ctx.tree
        frontier = [tree.chain(node) for node in tree.open_steps()]
        expanding: list[tuple[ThoughtNode, int]] = []
        # Nodes after which nothing new can be proposed (a grammar with no step left to offer).
        exhausted: set[str] = set()
        if not frontier:
            # A fresh tree, or one that holds only whole chains (a probe): start at the root.
            expanding = [(tree.root, self.root_proposals(ctx))]
        stopped: str | None = None
        while ctx.scorer.solved is None:
            if not expanding:
                await score_unscored(ctx, frontier)
                kept = self.keep(ctx, alive(ctx, frontier))
                tree.set_status([c.node.node_id for c in frontier if c not in kept], "pruned")
                expanding = [(c.node, self.proposals(ctx)) for c in kept]
            if not expanding:
                # Every path ended without a verified answer: spend what is left on new ones.
                expanding = self.restart(ctx, exhausted)
            if not expanding:
                break  # every step the task allows was proposed
            try:
                new = await expand_all(ctx, expanding)
            except BudgetExhausted:
                stopped = "budget"
                break
            if not new:
                exhausted.update(node.node_id for node, _ in expanding)
            expanding = []
            await score(ctx, new)
            frontier = [c for c in new if not c.terminal]
            ranked = best_first(ctx, alive(ctx, new))
            await ctx.progress(max((c.node.depth for c in new), default=0), ranked[0] if ranked else None)
        return conclude(ctx, self.name, stopped)

    def restart(self, ctx: SearchContext, exhausted: set[str]) -> list[tuple[ThoughtNode, int]]:
        """New paths from the root while it has steps left to propose; then from the best
        steps the search chose before (backtracking), where the grammar still offers more."""
        tree = ctx.tree
        if tree.root.node_id not in exhausted:
            return [(tree.root, self.root_proposals(ctx))]
        chosen_before = [tree.chain(node) for node in tree.expanded_steps() if node.node_id not in exhausted]
        return [(c.node, self.proposals(ctx)) for c in self.keep(ctx, alive(ctx, chosen_before))]


async def expand_all(ctx: SearchContext, expanding: Sequence[tuple[ThoughtNode, int]]) -> list[Chain]:
    """Expand the nodes concurrently (the engine batches them). BudgetExhausted only when
    the budget left none of them anything."""
    results = await asyncio.gather(
        *(ctx.expander.expand(node, k) for node, k in expanding), return_exceptions=True
    )
    new: list[Chain] = []
    spent: BudgetExhausted | None = None
    for result in results:
        if isinstance(result, BudgetExhausted):
            spent = result
        elif isinstance(result, BaseException):
            raise result
        else:
            new.extend(result)
    if spent is not None and not new:
        raise spent
    return new


async def score(ctx: SearchContext, chains: Sequence[Chain]) -> None:
    """Verify finished chains and unfinished paths apart: only finished ones meet the judge.

    Pruned proposals (repeats of a sibling, broken steps) are not worth a verifier call.
    """
    chains = [c for c in chains if not ctx.tree.pruned(c)]
    finished = [c for c in chains if c.terminal]
    unfinished = [c for c in chains if not c.terminal]
    for group in (finished, unfinished):
        if group:
            await ctx.scorer.verify(group)


async def score_unscored(ctx: SearchContext, chains: Sequence[Chain]) -> None:
    """Steps a dead planner wrote but never scored get their scores now."""
    await score(ctx, [c for c in chains if c.node.node_id not in ctx.scorer.scores])
