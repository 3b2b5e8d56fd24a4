"""High effort: N chains, each scored by the verifiers; the best-scored chain wins."""

from __future__ import annotations

from cluster.search.base import SearchOutcome, SearchStrategy, register_strategy
from cluster.search.context import SearchContext
from cluster.search.voting import Votes


@register_strategy
class BestOfN(SearchStrategy):
    name = "best_of_n"

    async def run(self, ctx: SearchContext) -> SearchOutcome:
        n = ctx.budget.max_branches
        chains = await ctx.expander.sample_chains(n, hold_back=ctx.scorer.judge_tokens(n))
        scores = await ctx.scorer.verify(chains)
        votes = Votes(chains, ctx.task.vote_key)
        # Verifier score first; agreement breaks ties between equally scored chains, and a
        # chain with an answer beats one without.
        ranked = sorted(
            zip(chains, scores, strict=True),
            key=lambda cs: (cs[1], votes.of(cs[0]), cs[0].answer is not None),
            reverse=True,
        )
        winner, score = ranked[0]
        reason = f"verifier score {score:.2f}, best of {len(chains)}"
        return SearchOutcome(winner, votes.of(winner), votes.cast, score, reason)
