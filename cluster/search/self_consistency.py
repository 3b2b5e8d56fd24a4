"""Medium effort: several independent chains, answers normalised and majority-voted."""

from __future__ import annotations

from cluster.search.base import SearchOutcome, SearchStrategy, register_strategy
from cluster.search.context import SearchContext
from cluster.search.voting import agreement, vote_counts


@register_strategy
class SelfConsistency(SearchStrategy):
    name = "self_consistency"

    async def run(self, ctx: SearchContext) -> SearchOutcome:
        chains = await ctx.expander.sample_chains(ctx.budget.max_branches)
        counts = vote_counts(chains)
        # Among chains of the most common answer, prefer one that finished on its own.
        winner = max(chains, key=lambda c: (agreement(c, counts), c.finish_reason == "stop"))
        votes = agreement(winner, counts)
        answered = sum(counts.values())
        reason = f"{votes} of {answered} answered chains agree" if answered else "no chain gave an answer"
        return SearchOutcome(winner, votes, answered, None, reason)
