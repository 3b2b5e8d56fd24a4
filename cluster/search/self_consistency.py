"""Medium effort: several independent chains, answers normalised and majority-voted."""

from __future__ import annotations

from cluster.search.base import SearchOutcome, SearchStrategy, register_strategy
from cluster.search.context import SearchContext
from cluster.search.voting import Votes


@register_strategy
class SelfConsistency(SearchStrategy):
    name = "self_consistency"

    async def run(self, ctx: SearchContext) -> SearchOutcome:
        chains = await ctx.expander.sample_chains(ctx.budget.max_branches)
        votes = Votes(chains, ctx.task.vote_key)
        # Among chains of the most common answer, prefer one that finished on its own.
        winner = max(chains, key=lambda c: (votes.of(c), c.finish_reason == "stop"))
        agreeing = votes.of(winner)
        reason = (
            f"{agreeing} of {votes.cast} answered chains agree" if votes.cast else "no chain gave an answer"
        )
        return SearchOutcome(winner, agreeing, votes.cast, None, reason)
