"""Diverse verifier tree search (DVTS): independent subtrees, each grown greedily.

The root gets max_branches/beam_width first steps, one per subtree; each round every
subtree proposes `beam_width` next steps from its one open step and keeps only its best.
Subtrees never compete with each other, which keeps the answers diverse at large budgets.
"""

from __future__ import annotations

from collections.abc import Sequence

from cluster.search.base import register_strategy
from cluster.search.context import SearchContext
from cluster.search.selection import best_first
from cluster.search.stepwise import StepwiseSearch
from cluster.search.tree import Chain


@register_strategy
class DiverseVerifierTreeSearch(StepwiseSearch):
    name = "dvts"

    def root_proposals(self, ctx: SearchContext) -> int:
        return max(ctx.budget.max_branches // ctx.budget.beam_width, 1)

    def proposals(self, ctx: SearchContext) -> int:
        return ctx.budget.beam_width

    def keep(self, ctx: SearchContext, candidates: Sequence[Chain]) -> list[Chain]:
        best_of_subtree: dict[str, Chain] = {}
        for chain in best_first(ctx, candidates):
            # path[1] is the subtree's first step, just below the root.
            best_of_subtree.setdefault(chain.path[1], chain)
        return list(best_of_subtree.values())
