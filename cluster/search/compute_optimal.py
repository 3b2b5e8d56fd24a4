"""Compute-optimal effort (after Snell et al. 2024): probe first, then spend by difficulty.

A few short chains estimate how hard the problem is, from how well their answers agree and
what the verifiers think of them. Easy problems stop there and hand back the rest of the
budget; problems of middling difficulty get best-of-N re-ranking, which does best when the
model is often right; hard ones get step-level beam search, which does best when it is
rarely right. The choice and its reason are recorded on the tree.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from cluster.search.base import SearchOutcome, SearchStrategy, build_strategy, register_strategy
from cluster.search.context import SearchContext
from cluster.search.expander import BudgetExhausted
from cluster.search.selection import conclude
from cluster.search.tree import Chain
from cluster.search.voting import Votes
from cluster.verifiers.base import NEUTRAL_SCORE

Difficulty = Literal["easy", "medium", "hard"]
# Share of the probe that must agree on one answer for the problem to count as easy.
EASY_AGREEMENT = 2 / 3
NEXT_STRATEGY: dict[Difficulty, str | None] = {"easy": None, "medium": "best_of_n", "hard": "beam_search"}
CHOICE = "strategy_choice"


@dataclass(frozen=True, slots=True)
class Assessment:
    difficulty: Difficulty
    reason: str


def assess(
    chains: list[Chain], scores: list[float], proven: bool, refuted: set[str], vote_key: Callable[[str], str]
) -> Assessment:
    answered = [c for c in chains if c.answer is not None]
    # Agreeing on an answer a program found wrong is no sign of an easy problem.
    votes = Votes([c for c in answered if c.node.node_id not in refuted], vote_key)
    top_votes = votes.top
    best = max(scores, default=NEUTRAL_SCORE)
    seen = (
        f"{len(answered)} of {len(chains)} probe chains answered, {len(answered) - votes.cast} "
        f"of them proven wrong, {top_votes} agree, best score {best:.2f}"
    )
    if proven:
        return Assessment("easy", f"{seen}; a program verified one")
    if top_votes >= 2 and top_votes >= math.ceil(EASY_AGREEMENT * len(chains)) and best >= NEUTRAL_SCORE:
        return Assessment("easy", f"{seen}: they agree")
    if answered and (best > NEUTRAL_SCORE or top_votes >= 2):
        return Assessment("medium", f"{seen}: some promise")
    return Assessment("hard", f"{seen}: no promising answer")


@register_strategy
class ComputeOptimal(SearchStrategy):
    name = "compute_optimal"
    grows_tree = True

    async def run(self, ctx: SearchContext) -> SearchOutcome:
        chosen = (await ctx.notes()).get(CHOICE)
        if chosen is None:
            assessment = await self._probe(ctx)
            chosen = NEXT_STRATEGY[assessment.difficulty] or "none"
            await ctx.note(
                "strategy",
                **{CHOICE: chosen, "difficulty": assessment.difficulty, "choice_reason": assessment.reason},
            )
        if chosen == "none":
            return conclude(ctx, f"{self.name} (easy: probe only)")
        try:
            outcome = await build_strategy(chosen).run(ctx)
        except BudgetExhausted:
            return conclude(ctx, f"{self.name} (chose {chosen}, but the probe spent the budget)", "budget")
        reason = f"{self.name} chose {chosen}; {outcome.reason}"
        return replace(outcome, reason=reason)

    async def _probe(self, ctx: SearchContext) -> Assessment:
        n = ctx.budget.probe_branches
        chains = await ctx.expander.sample_chains(
            n, hold_back=ctx.scorer.judge_tokens(n), max_tokens=ctx.budget.probe_tokens_per_branch
        )
        scores = await ctx.scorer.verify(chains)
        solved = ctx.scorer.solved is not None
        return assess(chains, scores, solved, ctx.scorer.refuted, ctx.task.vote_key)
