"""Running a started tree's search on a planner replica, shared by the gateway and the job runner.

The planner answers by the request's deadline with the best it has (anytime); the grace covers
its last writes. Failures come back as `ApiError`s (deployments/errors.py): a 504 only when the
search had no candidate at all. A planner replica that dies mid-search is replaced by Serve and
the tree is resumed on another.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from cluster.search.controller import DeadlineExceeded
from cluster.types import SolveRequest, SolveResult
from deployments.errors import api_error

logger = logging.getLogger(__name__)

# How often one request resumes its tree after its planner replica died.
PLANNER_RESUMES = 2
# Time the caller waits beyond the deadline for the planner to answer with what it has.
DEADLINE_GRACE_S = 10.0


async def solve_on_planner(planner: DeploymentHandle, solve: SolveRequest) -> SolveResult:
    """Run the search of a started tree on a planner; failures become ApiErrors.

    Cancelling the caller cancels the planner's task: the tree is marked cancelled and its
    reservations are released.
    """
    if solve.deadline_at is None:
        raise ValueError("a search started by a client needs its deadline (deadline_at)")
    wait_s = max(solve.deadline_at - time.time(), 0.0) + DEADLINE_GRACE_S
    try:
        return await asyncio.wait_for(_call_planner(planner, solve), wait_s)
    except TimeoutError as exc:  # ours, or the planner's DeadlineExceeded
        raise api_error(DeadlineExceeded(f"the {solve.effort.value} deadline passed"), solve.tree_id) from exc
    except Exception as exc:
        raise api_error(exc, solve.tree_id) from exc


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
