"""Failed searches reach clients as a status and one sentence, never as a Ray traceback."""

from __future__ import annotations

import re

import pytest
from ray.exceptions import ActorDiedError, RayActorError, RayTaskError
from redis.exceptions import ConnectionError as RedisConnectionError

from cluster.api import ApiError
from cluster.search.controller import DeadlineExceeded
from deployments.errors import api_error, cause_of

pytestmark = pytest.mark.unit

TRACEBACK = (
    "\x1b[36mray::Planner.solve()\x1b[39m (pid=4242, ip=127.0.0.1, actor_id=a1b2c3d4e5f6, "
    'repr=<deployments.workers.Planner object at 0x7f00>)\n  File "/work/main/cluster/search/'
    'controller.py", line 77, in _solve\n    raise DeadlineExceeded(...)\n'
)
# What must never reach a client: escape codes, file paths, pids, actor ids, object addresses.
LEAKS = re.compile(r"\x1b\[|/work/|\.py\b|pid=|actor_id|0x[0-9a-f]{4}|Traceback|File \"")


def wrapped(cause: BaseException) -> BaseException:
    """What awaiting a Serve handle raises when the replica raised `cause`."""
    error = RayTaskError("Planner.solve", TRACEBACK, cause, pid=4242, ip="127.0.0.1", actor_id="a1b2c3d4e5f6")
    return error.as_instanceof_cause()


@pytest.mark.parametrize(
    ("cause", "status", "headers"),
    [
        (DeadlineExceeded("the high deadline of 240 s passed"), 504, {"x-should-retry": "false"}),
        (ActorDiedError(), 503, {"Retry-After": "5"}),
        (RayActorError(actor_id="a1b2c3d4e5f6"), 503, {"Retry-After": "5"}),
        (RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."), 503, {}),
        (ZeroDivisionError("division by zero in /work/main/cluster/x.py"), 500, {}),
    ],
)
def test_wrapped_errors_become_a_status_and_a_clean_sentence(
    cause: BaseException, status: int, headers: dict[str, str]
) -> None:
    error = api_error(wrapped(cause), "tree-1")
    assert error.status == status
    assert headers.items() <= error.headers.items()
    body = error.body()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    assert not LEAKS.search(body["message"]), body["message"]
    assert body["message"].count("\n") == 0 and len(body["message"]) < 200


def test_a_deadline_without_any_candidate_tells_clients_not_to_retry_at_once() -> None:
    error = api_error(DeadlineExceeded("the low deadline of 60 s passed"), "tree-2")
    assert (error.status, error.type, error.code) == (504, "timeout_error", "deadline_exceeded")
    assert error.headers == {"Retry-After": "30", "x-should-retry": "false"}
    assert "tree-2" in error.message


def test_api_errors_from_a_replica_pass_through_unchanged() -> None:
    original = ApiError(400, "messages: bad", param="messages")
    assert api_error(wrapped(original), "t") is original
    assert cause_of(wrapped(original)) is original
