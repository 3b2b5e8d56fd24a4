"""Running a started tree's search on a planner replica, shared by the gateway and the job runner.

Failures come back as `ApiError`s (504 at the deadline, 500 otherwise); a planner replica
that dies mid-search is replaced by Serve and the tree is resumed on another.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from cluster.api import ApiError
from cluster.config import EffortBudget
from cluster.search.controller import DeadlineExceeded
from cluster.types import SolveRequest, SolveResult

logger = logging.getLogger(__name__)

# How often one request resumes its tree after its planner replica died.
PLANNER_RESUMES = 2
# Time the caller waits beyond the effort's deadline for the planner to wrap up.
DEADLINE_GRACE_S = 30.0


async def solve_on_planner(
    planner: DeploymentHandle, solve: SolveRequest, budget: EffortBudget
) -> SolveResult:
    """Run the search of a started tree on a planner; failures become ApiErrors.

    Cancelling the caller cancels the planner's task: the tree is marked cancelled and its
    reservations are released.
    """
    try:
        return await asyncio.wait_for(_call_planner(planner, solve), budget.deadline_s + DEADLINE_GRACE_S)
    except DeadlineExceeded as exc:
        raise ApiError(504, f"{exc}; try a lower reasoning_effort", type="timeout_error") from exc
    except TimeoutError as exc:
        raise ApiError(
            504, f"no answer within the {solve.effort.value} deadline", type="timeout_error"
        ) from exc
    except Exception as exc:
        logger.exception("tree %s failed", solve.tree_id)
        raise ApiError(
            500,
            f"the search failed: {type(exc).__name__}; tree {solve.tree_id} holds what was done",
            type="server_error",
        ) from exc


async def _call_planner(planner: DeploymentHandle, solve: SolveRequest) -> SolveResult:
    """Run the search on a planner; if the planner dies, resume the tree on another."""
    for attempt in range(PLANNER_RESUMES + 1):
        response = planner.solve.remote(solve if attempt == 0 else replace(solve, resume=True))
        try:
            result: SolveResult = await response
            return result
        except asyncio.CancelledError:
            # Awaiting a DeploymentResponse does not cancel the call. Cancelling it cancels the
            # planner's task: the tree is marked cancelled and its reservations are released.
            response.cancel()
            raise
        except RayActorError:
            if attempt == PLANNER_RESUMES:
                raise
            # Serve replaces the dead replica; the tree in Redis holds what it had done.
            logger.warning("the planner of tree %s died; resuming the tree", solve.tree_id)
    raise AssertionError("unreachable: the last attempt returns or raises")
