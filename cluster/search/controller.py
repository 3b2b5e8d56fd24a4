"""The search controller the planner deployment runs: one tree from start to finish."""

from __future__ import annotations

import asyncio
import logging

from cluster.config import ClusterConfig, EffortBudget
from cluster.search.base import SearchOutcome, build_strategy
from cluster.search.context import SearchContext, SearchServices
from cluster.search.summary import summarize
from cluster.store import FinalTreeStatus
from cluster.types import SolveRequest, SolveResult

logger = logging.getLogger(__name__)


class DeadlineExceeded(TimeoutError):
    """The effort's deadline passed before any chain was complete."""


class SearchController:
    def __init__(self, config: ClusterConfig, services: SearchServices) -> None:
        self._config = config
        self._services = services
        self._store = services.store
        self._observer = services.observer

    def budget_for(self, request: SolveRequest) -> EffortBudget:
        budget = self._config.budget_for(request.effort)
        tokens = min(budget.max_reasoning_tokens, request.max_reasoning_tokens)
        return budget.model_copy(
            update={
                "strategy": request.strategy or budget.strategy,
                "max_reasoning_tokens": tokens,
                "max_tokens_per_branch": min(budget.max_tokens_per_branch, tokens),
            }
        )

    async def solve(self, request: SolveRequest) -> SolveResult:
        budget = self.budget_for(request)
        strategy = build_strategy(budget.strategy)
        ctx = SearchContext(request, budget, self._services)
        try:
            await ctx.start()
            outcome = await asyncio.wait_for(strategy.run(ctx), timeout=budget.deadline_s)
        except BaseException as exc:
            await self._store.finish_tree(
                request.tree_id, _failure_status(exc), (), self._config.redis.tree_ttl_s
            )
            await self._store.append_event(request.tree_id, "failed", {"error": repr(exc)[:500]})
            self._observed(ctx, strategy.name, _failure_outcome(exc), discarded=0)
            if isinstance(exc, TimeoutError):
                raise DeadlineExceeded(
                    f"the {request.effort.value} deadline of {budget.deadline_s:g} s passed"
                ) from exc
            raise
        result = await self._finish(ctx, outcome, strategy.name)
        self._observed(ctx, strategy.name, "done", discarded=len(ctx.chains) - 1)
        return result

    def _observed(self, ctx: SearchContext, strategy: str, outcome: str, discarded: int) -> None:
        nodes, depth = ctx.tree_shape()
        self._observer.search_finished(
            ctx.request, strategy, outcome, nodes, depth, max(discarded, 0), ctx.elapsed_s()
        )

    async def _finish(self, ctx: SearchContext, outcome: SearchOutcome, strategy: str) -> SolveResult:
        assert ctx.root is not None
        winner = outcome.winner
        path = (ctx.root.node_id, winner.node.node_id)
        answer = winner.answer or winner.node.text.strip()
        summary = summarize(winner.node.text, winner.answer, outcome.reason)
        await self._store.set_meta_fields(
            ctx.tree_id,
            answer=answer,
            summary=summary,
            reason=outcome.reason,
            verifier_completion_tokens=str(ctx.verifier_completion_tokens),
        )
        await self._store.finish_tree(ctx.tree_id, "done", path, self._config.redis.tree_ttl_s)
        await self._store.append_event(
            ctx.tree_id, "done", {"answer": answer[:200], "reason": outcome.reason}
        )
        return SolveResult(
            tree_id=ctx.tree_id,
            answer=answer,
            content=answer,
            summary=summary,
            strategy=strategy,
            usage=ctx.usage,
            branches=len(ctx.chains),
            verifier_calls=ctx.verifier_calls,
            winning_path=path,
            finish_reason="stop" if winner.finish_reason == "stop" else "length",
        )


def _failure_outcome(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "deadline" if isinstance(exc, TimeoutError) else "failed"


def _failure_status(exc: BaseException) -> FinalTreeStatus:
    return "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
