"""Step-level beam search: keep the `beam_width` best steps, propose more after each."""

from __future__ import annotations

from collections.abc import Sequence

from cluster.search.base import register_strategy
from cluster.search.context import SearchContext
from cluster.search.selection import best_first
from cluster.search.stepwise import StepwiseSearch
from cluster.search.tree import Chain


@register_strategy
class BeamSearch(StepwiseSearch):
    name = "beam_search"

    def root_proposals(self, ctx: SearchContext) -> int:
        return ctx.budget.max_branches

    def proposals(self, ctx: SearchContext) -> int:
        return max(ctx.budget.max_branches // ctx.budget.beam_width, 1)

    def keep(self, ctx: SearchContext, candidates: Sequence[Chain]) -> list[Chain]:
        return best_first(ctx, candidates)[: ctx.budget.beam_width]
