"""The search controller the planner deployment runs: one tree from start to finish.

It holds the tree's lease while it searches, so that only one planner works on a tree; a
planner that takes over the tree of a dead one resumes from what the tree in Redis holds.
Every write of the search carries the lease token, so a planner that lost its lease (it
stalled, or was cut off) can no longer change the tree.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

from cluster.config import ClusterConfig, EffortBudget
from cluster.search.base import SearchOutcome, SearchStrategy, build_strategy
from cluster.search.context import SearchContext, SearchServices
from cluster.search.expander import BudgetExhausted
from cluster.search.selection import conclude
from cluster.search.summary import summarize
from cluster.store import FinalTreeStatus, Lease, LeaseLostError
from cluster.tasks import get_task
from cluster.types import SearchStatus, SolveRequest, SolveResult

logger = logging.getLogger(__name__)


class DeadlineExceeded(TimeoutError):
    """The effort's deadline passed before the search had any candidate answer."""


class SearchController:
    def __init__(self, config: ClusterConfig, services: SearchServices) -> None:
        self._config = config
        self._services = services
        self._store = services.store
        self._observer = services.observer
        self._holder = f"{socket.gethostname()}:{os.getpid()}"

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
        leases = self._services.leases
        if leases is None:
            return await self._solve(request, None)
        # A resumed tree waits out its dead planner's lease; a new tree has no other holder.
        wait_s = 2 * leases.ttl_s if request.resume else 0.0
        async with leases.hold(request.tree_id, self._holder, wait_s) as lease:
            try:
                return await self._solve(request, lease)
            except asyncio.CancelledError:
                if lease.lost:
                    raise LeaseLostError(f"lost the lease of tree {request.tree_id}") from None
                raise

    async def _solve(self, request: SolveRequest, lease: Lease | None) -> SolveResult:
        budget = self.budget_for(request)
        strategy = build_strategy(budget.strategy)
        task = get_task(request.problem.task)
        steps = task.step_format(request.problem, self._config.task_settings(task.name))
        fence = lease.token if lease is not None else None
        ctx = SearchContext(request, budget, self._services, steps, fence)
        started = time.monotonic()
        try:
            deadline_s = await self._begin(ctx, budget)
            outcome = await self._search(ctx, strategy, deadline_s)
        except BaseException as exc:
            if (lease is not None and lease.lost) or isinstance(exc, LeaseLostError):
                raise  # the tree belongs to another planner now: leave it alone
            await self._store.finish_tree(
                request.tree_id, _failure_status(exc), (), self._config.redis.tree_ttl_s, fence
            )
            await self._store.append_event(request.tree_id, "failed", {"error": _failure_message(exc)})
            self._observed(ctx, strategy.name, _failure_outcome(exc), 0, started)
            if isinstance(exc, TimeoutError):
                raise DeadlineExceeded(
                    f"the {request.effort.value} deadline of {budget.deadline_s:g} s passed"
                ) from exc
            raise
        result = await self._finish(ctx, outcome, strategy.name, fence)
        discarded = len(ctx.tree) - len(outcome.winner.path)
        self._observed(ctx, strategy.name, "done", discarded, started)
        return result

    async def _search(self, ctx: SearchContext, strategy: SearchStrategy, deadline_s: float) -> SearchOutcome:
        """Run the strategy; when the deadline, the budget or a failure stops it early, the best
        candidate grown so far is the answer (anytime). Only a search that grew no candidate
        at all fails: past its deadline with DeadlineExceeded, otherwise with its own error."""
        try:
            return await asyncio.wait_for(strategy.run(ctx), timeout=deadline_s)
        except TimeoutError as exc:
            return self._anytime(ctx, strategy, "deadline", exc)
        except BudgetExhausted as exc:
            return self._anytime(ctx, strategy, "budget", exc)
        except LeaseLostError:
            raise
        except Exception as exc:
            logger.warning("the search of tree %s stopped early: %s", ctx.tree_id, _failure_message(exc))
            return self._anytime(ctx, strategy, "error", exc)

    @staticmethod
    def _anytime(
        ctx: SearchContext, strategy: SearchStrategy, reason: str, cause: Exception
    ) -> SearchOutcome:
        try:
            return conclude(ctx, strategy.name, reason)
        except BudgetExhausted:
            raise cause from None

    async def _begin(self, ctx: SearchContext, budget: EffortBudget) -> float:
        """Start the tree, or take over a dead planner's; the seconds left to the deadline."""
        request = ctx.request
        if not request.resume or not await ctx.resume():
            await ctx.tree.start(request.problem.question)
            if not request.resume:
                return _seconds_left(request, budget.deadline_s)
        voided = await self._services.ledger.void_reservations(ctx.tree_id)
        meta = await self._store.get_meta(ctx.tree_id)
        elapsed = time.time() - meta.created_at if meta is not None else 0.0
        ctx.tree.event("resumed", {"nodes": len(ctx.tree), "voided_reservations": voided})
        await ctx.tree.flush()
        logger.info("resumed tree %s with %d nodes after %.1f s", ctx.tree_id, len(ctx.tree) - 1, elapsed)
        return _seconds_left(request, budget.deadline_s - elapsed)

    def _observed(
        self, ctx: SearchContext, strategy: str, outcome: str, discarded: int, started: float
    ) -> None:
        nodes, depth = ctx.shape()
        self._observer.search_finished(
            ctx.request, strategy, outcome, nodes, depth, max(discarded, 0), time.monotonic() - started
        )

    async def _finish(
        self, ctx: SearchContext, outcome: SearchOutcome, strategy: str, fence: str | None
    ) -> SolveResult:
        winner = outcome.winner
        answer = winner.answer or winner.text.strip()
        summary = summarize(winner.text, winner.answer, outcome.reason)
        solved = ctx.scorer.solved
        verified = solved is not None and solved.node.node_id == winner.node.node_id
        status: SearchStatus = "incomplete" if outcome.incomplete else "complete"
        await ctx.tree.flush()
        await self._store.set_meta_fields(
            ctx.tree_id,
            fence=fence,
            answer=answer,
            summary=summary,
            reason=outcome.reason,
            search_status=status,
            incomplete_reason=outcome.incomplete or "",
            verified=str(verified).lower(),
            verifier_completion_tokens=str(ctx.scorer.usage.completion_tokens),
        )
        await self._store.finish_tree(ctx.tree_id, "done", winner.path, self._config.redis.tree_ttl_s, fence)
        done = {"answer": answer[:200], "reason": outcome.reason, "status": status, "verified": verified}
        await self._store.append_event(ctx.tree_id, "done", done)
        return SolveResult(
            tree_id=ctx.tree_id,
            answer=answer,
            content=answer,
            summary=summary,
            strategy=strategy,
            usage=ctx.usage,
            branches=len(ctx.tree) - 1,
            verifier_calls=ctx.scorer.calls,
            winning_path=winner.path,
            finish_reason="stop" if winner.finish_reason == "stop" and not outcome.incomplete else "length",
            status=status,
            incomplete_reason=outcome.incomplete,
            verified=verified,
        )


def _seconds_left(request: SolveRequest, default_s: float) -> float:
    """Seconds to the request's deadline (never less than a moment: the search starts, then stops)."""
    left = request.deadline_at - time.time() if request.deadline_at is not None else default_s
    return max(left, 0.001)


def _failure_outcome(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "deadline" if isinstance(exc, TimeoutError) else "failed"


def _failure_status(exc: BaseException) -> FinalTreeStatus:
    return "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"


def _failure_message(exc: BaseException) -> str:
    """What a `failed` event says: the kind of failure and its message, never a traceback."""
    if isinstance(exc, asyncio.CancelledError):
        return "the search was cancelled"
    if isinstance(exc, TimeoutError):
        return "the deadline passed"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
