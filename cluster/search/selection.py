"""Choosing the answer of a tree search among the chains it finished."""

from __future__ import annotations

import math
from collections.abc import Sequence

from cluster.search.base import SearchOutcome
from cluster.search.context import SearchContext
from cluster.search.expander import BudgetExhausted
from cluster.search.tree import Chain
from cluster.search.voting import Votes


def alive(ctx: SearchContext, chains: Sequence[Chain]) -> list[Chain]:
    """Chains not ruled out: neither pruned (a wrong step, a repeat) nor scored 0 (a broken format)."""
    return [c for c in chains if not ctx.tree.pruned(c) and ctx.scorer.score_of(c) > 0.0]


def best_first(ctx: SearchContext, chains: Sequence[Chain]) -> list[Chain]:
    """Verifier score first, then the model's own confidence in the last step."""
    return sorted(chains, key=lambda c: (ctx.scorer.score_of(c), _confidence(c)), reverse=True)


def conclude(ctx: SearchContext, strategy: str, incomplete: str | None = None) -> SearchOutcome:
    """The best-scored answer of the tree; agreement between answers breaks ties.

    Without any answer, the best unfinished path is returned as it stands. `incomplete` says
    why the search stopped before it was done; a verified answer leaves nothing undone.
    """
    if ctx.scorer.solved is not None:
        return _outcome(ctx, ctx.scorer.solved, f"{strategy}: a program verified the answer", None)
    answered = ctx.answered()
    score_of = ctx.scorer.score_of
    if not answered:
        chains = ctx.chains()
        if not chains:
            raise BudgetExhausted("the budget ended before any step was grown")
        deepest = max(chains, key=lambda c: (score_of(c), c.node.depth, _confidence(c)))
        return _outcome(ctx, deepest, f"{strategy}: no chain reached an answer", incomplete)
    votes = Votes(answered, ctx.task.vote_key)
    winner = max(answered, key=lambda c: (score_of(c), votes.of(c), _confidence(c)))
    return _outcome(ctx, winner, f"{strategy}: verifier score {score_of(winner):.2f}", incomplete)


def _outcome(ctx: SearchContext, winner: Chain, why: str, incomplete: str | None) -> SearchOutcome:
    answered = ctx.answered()
    votes = Votes(answered, ctx.task.vote_key)
    stopped = f"; stopped early ({incomplete})" if incomplete else ""
    reason = f"{why}; {len(ctx.tree) - 1} nodes explored, {len(answered)} finished{stopped}"
    score = ctx.scorer.scores.get(winner.node.node_id)
    return SearchOutcome(winner, votes.of(winner), votes.cast, score, reason, incomplete)


def _confidence(chain: Chain) -> float:
    return chain.node.logprob if chain.node.logprob is not None else -math.inf
