"""Low effort: one chain of thought, taken as it is (scored, when verifiers are configured)."""

from __future__ import annotations

from cluster.search.base import SearchOutcome, SearchStrategy, register_strategy
from cluster.search.context import SearchContext


@register_strategy
class SingleChain(SearchStrategy):
    name = "single_chain"

    async def run(self, ctx: SearchContext) -> SearchOutcome:
        (chain,) = await ctx.expander.sample_chains(1, hold_back=ctx.scorer.judge_tokens(1))
        (score,) = await ctx.scorer.verify([chain]) if ctx.budget.verifiers else (None,)
        answered = int(chain.answer is not None)
        # A chain the token cap cut off is what the budget bought, not what the model finished.
        cut = "budget" if chain.node.finish_reason == "length" else None
        return SearchOutcome(chain, answered, answered, score, "the only chain", cut)
