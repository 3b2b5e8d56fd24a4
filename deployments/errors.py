"""What the gateway tells a client when a request fails after it was accepted.

Ray wraps an error raised in a replica in a `RayTaskError` whose text is the remote
traceback (with ANSI colours, file paths, pids and actor ids). None of that reaches a
client: the error is unwrapped to its cause and mapped to a status and one sentence a person
can act on. Statuses that retrying will not fix say so (`x-should-retry: false`, which the
official OpenAI clients honour) so clients do not multiply the load.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cluster.api import ApiError
from cluster.search.controller import DeadlineExceeded
from cluster.store import LeaseLostError

logger = logging.getLogger(__name__)

# How long a client should wait before it tries again after a 503 (a replica restarting).
UNAVAILABLE_RETRY_AFTER_S = 5
# After a 504 the same request would time out again: a later retry at a lower effort may not.
TIMEOUT_RETRY_AFTER_S = 30
# A replica died, is restarting, or refused work: another try soon may well succeed.
_UNAVAILABLE = (
    RayActorError,
    ActorDiedError,
    ActorUnavailableError,
    DeploymentUnavailableError,
    BackPressureError,
    LeaseLostError,
)


def cause_of(exc: BaseException) -> BaseException:
    """The error a replica raised, out of Ray's wrappers."""
    while isinstance(exc, RayTaskError) and exc.cause is not None and exc.cause is not exc:
        exc = exc.cause
    return exc


def api_error(exc: BaseException, tree_id: str) -> ApiError:
    """The client's view of a failed search; the full error goes to the log only."""
    cause = cause_of(exc)
    if isinstance(cause, ApiError):
        return cause
    if isinstance(cause, DeadlineExceeded):
        return ApiError(
            504,
            f"the search grew no candidate answer before its deadline; tree {tree_id} holds what was "
            "done. Retry later or with a lower reasoning_effort",
            type="timeout_error",
            code="deadline_exceeded",
            headers=_no_retry(TIMEOUT_RETRY_AFTER_S),
        )
    if isinstance(cause, _UNAVAILABLE):
        return _unavailable("a worker of the cluster is restarting or overloaded; retry shortly")
    if isinstance(cause, RedisConnectionError | RedisTimeoutError):
        return _unavailable("the tree store (Redis) is unavailable; retry shortly")
    logger.error("the search of tree %s failed", tree_id, exc_info=cause)
    return ApiError(
        500,
        f"the search failed ({type(cause).__name__}); tree {tree_id} holds what was done",
        type="server_error",
    )


def internal_error() -> ApiError:
    """What a client learns of an error nobody expected: nothing of the inside (the caller logs
    it with its traceback)."""
    return ApiError(500, "internal error", type="server_error")


def _unavailable(message: str) -> ApiError:
    return ApiError(
        503,
        message,
        type="server_error",
        code="service_unavailable",
        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)},
    )


def _no_retry(after_s: int) -> dict[str, str]:
    return {"Retry-After": str(after_s), "x-should-retry": "false"}


class GeneratorWatch:
    """Whether any branch-generator replica runs, as Serve's controller sees it.

    While none does (the only engine died and its replica is being replaced), a new request
    is answered at once with a 503 and Retry-After instead of waiting for an engine that is
    not there. The controller is asked at most every `ttl_s`.
    """

    def __init__(self, app: str, deployment: str, ttl_s: float = 1.0) -> None:
        # The generators' application: a gateway may run in another one (the same workers
        # behind a second gateway with other settings).
        self._app = app
        self._deployment = deployment
        self._ttl_s = ttl_s
        self._checked = -float("inf")
        self._running = True

    async def require(self) -> None:
        if time.monotonic() - self._checked >= self._ttl_s:
            self._running = await asyncio.to_thread(self._any_running)
            self._checked = time.monotonic()
        if not self._running:
            raise _unavailable("no engine is running right now (one is starting); retry shortly")

    def _any_running(self) -> bool:
        return replica_states(self._app, self._deployment).get("RUNNING", 0) > 0


def replica_states(app: str, deployment: str) -> dict[str, int]:
    """How many replicas of a deployment Serve's controller reports in each state (`RUNNING`,
    `STARTING`, ...); none while the application or the deployment is not deployed."""
    application = serve.status().applications.get(app)
    status = application.deployments.get(deployment) if application else None
    if status is None:
        return {}
    return {str(getattr(state, "value", state)): count for state, count in status.replica_states.items()}
