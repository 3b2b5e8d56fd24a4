"""High effort: N chains, each scored by the verifiers; the best-scored chain wins."""

from __future__ import annotations

from cluster.search.base import SearchOutcome, SearchStrategy, register_strategy
from cluster.search.context import SearchContext
from cluster.search.voting import agreement, vote_counts


@register_strategy
class BestOfN(SearchStrategy):
    name = "best_of_n"

    async def run(self, ctx: SearchContext) -> SearchOutcome:
        n = ctx.budget.max_branches
        chains = await ctx.expander.sample_chains(n, hold_back=ctx.scorer.judge_tokens(n))
        scores = await ctx.scorer.verify(chains)
        counts = vote_counts(chains)
        # Verifier score first; agreement breaks ties between equally scored chains, and a
        # chain with an answer beats one without.
        ranked = sorted(
            zip(chains, scores, strict=True),
            key=lambda cs: (cs[1], agreement(cs[0], counts), cs[0].answer is not None),
            reverse=True,
        )
        winner, score = ranked[0]
        answered = sum(counts.values())
        reason = f"verifier score {score:.2f}, best of {len(chains)}"
        return SearchOutcome(winner, agreement(winner, counts), answered, score, reason)
