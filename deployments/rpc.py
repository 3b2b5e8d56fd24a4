"""The gRPC API (`reasoning.v1.Reasoning`) in the gateway, served through Serve's gRPC proxy.

Serve's proxy calls the ingress deployment's method of the RPC's name with the request message
and a `grpc_context`. A call is a Responses API job like any other (deployments/responses.py):
the same validation, admission and job runner, the same messages in its errors, which become
gRPC status codes. When the client's deadline passes or it cancels, Serve cancels the call
here, and that cancels the job's search.

Ray Serve 2.60's gRPC proxy listens on every interface (it has no host option; the local
cluster rebinds it to loopback, cluster/local.py); wherever it listens wider while the HTTP
listener is on loopback (`http.host`, the local default), the gateway refuses gRPC callers
that are not on loopback too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from pydantic import ValidationError
from ray.serve.grpc_util import RayServegRPCContext

from cluster.api import ApiError, validation_error
from cluster.auth import Caller, authenticate
from cluster.responses import ResponseCreateRequest
from cluster.rpc import reasoning_pb2 as pb
from cluster.rpc.messages import grpc_code, progress_message, request_body, response_message, tree_message
from cluster.store import TreeStore
from cluster.store.jobs import JobRecord
from deployments.errors import internal_error
from deployments.jobs import fail_if_orphaned
from deployments.responses import ResponsesApi

logger = logging.getLogger(__name__)

# A stream waits this long for new tree events before it looks at the job record again.
EVENT_POLL_MS = 250


class ReasoningRpc(ResponsesApi):
    """The `reasoning.v1.Reasoning` methods; mixed into the Gateway (which provides `_store`)."""

    _store: TreeStore

    # Methods carry the RPCs' names: the proxy calls the method named like the RPC.
    async def Reason(self, request: pb.ReasonRequest, grpc_context: RayServegRPCContext) -> pb.ReasonResponse:
        with _errors_as_status(grpc_context):
            record = await self._open_rpc_job(request, grpc_context)
            if request.background:
                return response_message(record.response)
            return response_message(await self._finished(record))

    async def ReasonStream(
        self, request: pb.ReasonRequest, grpc_context: RayServegRPCContext
    ) -> AsyncIterator[pb.ReasonEvent]:
        with _errors_as_status(grpc_context):
            record = await self._open_rpc_job(request, grpc_context)
        async for event in self._follow(record, grpc_context, cancel_on_exit=not request.background):
            yield event

    async def GetResponse(
        self, request: pb.ResponseRequest, grpc_context: RayServegRPCContext
    ) -> pb.ReasonResponse:
        with _errors_as_status(grpc_context):
            record = await self._owned_job(request.id, self._rpc_caller(grpc_context))
            return response_message(record.response)

    async def FollowResponse(
        self, request: pb.ResponseRequest, grpc_context: RayServegRPCContext
    ) -> AsyncIterator[pb.ReasonEvent]:
        with _errors_as_status(grpc_context):
            record = await self._owned_job(request.id, self._rpc_caller(grpc_context))
        async for event in self._follow(record, grpc_context, cancel_on_exit=False):
            yield event

    async def GetTree(self, request: pb.GetTreeRequest, grpc_context: RayServegRPCContext) -> pb.Tree:
        with _errors_as_status(grpc_context):
            caller = self._rpc_caller(grpc_context)
            tree = await self._store.get_tree(request.tree_id) if request.tree_id else None
            if tree is None or not caller.may_read(tree.meta.owner):
                raise ApiError(
                    404, f"no tree {request.tree_id!r} (it may have expired)", type="not_found_error"
                )
            return tree_message(tree)

    async def Cancel(self, request: pb.CancelRequest, grpc_context: RayServegRPCContext) -> pb.ReasonResponse:
        with _errors_as_status(grpc_context):
            record = await self._owned_job(request.id, self._rpc_caller(grpc_context))
            return response_message(await self._cancel_job(record))

    # ---- helpers ------------------------------------------------------------------------

    def _rpc_caller(self, grpc_context: RayServegRPCContext) -> Caller:
        if _is_loopback(self._config.http.host) and not _peer_is_loopback(grpc_context.peer()):
            raise ApiError(
                403,
                "this gateway answers gRPC on loopback only (http.host is a loopback address)",
                type="permission_error",
            )
        metadata = dict(grpc_context.invocation_metadata())
        return authenticate(metadata.get("authorization"), self._config.auth)

    async def _open_rpc_job(self, request: pb.ReasonRequest, grpc_context: RayServegRPCContext) -> JobRecord:
        caller = self._rpc_caller(grpc_context)
        try:
            body = ResponseCreateRequest.model_validate(request_body(request))
        except ValidationError as exc:
            raise validation_error(exc) from exc
        self._check_model(body.model)
        return await self._open_job(body, caller, request.request_id or None)

    async def _follow(
        self, record: JobRecord, grpc_context: RayServegRPCContext, cancel_on_exit: bool
    ) -> AsyncIterator[pb.ReasonEvent]:
        """The job's tree events as progress, then its final response; leaving early cancels
        the job when `cancel_on_exit`."""
        numbers = itertools.count()
        ended = False
        try:
            async for kind, data in self._tree_progress(record.job_id):
                yield pb.ReasonEvent(sequence_number=next(numbers), progress=progress_message(kind, data))
            # The progress ends once the job record is final (or gone).
            final = await self._owned_job(record.response["id"], self._rpc_caller(grpc_context))
            ended = True
            yield pb.ReasonEvent(sequence_number=next(numbers), response=response_message(final.response))
        except ApiError as exc:
            ended = True
            _abort(grpc_context, exc)
        finally:
            if cancel_on_exit and not ended:  # the client left or its deadline passed
                await asyncio.shield(self._jobs.request_cancel(record.job_id))

    async def _tree_progress(self, job_id: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """The tree's events (kind, data) as they come, until the job has ended and all are read."""
        after = "0"
        while True:
            events = await self._store.read_events(job_id, after_id=after, block_ms=EVENT_POLL_MS)
            for event_id, event in events:
                after = event_id
                yield event["kind"], event["data"]
            if events:
                continue
            record = await self._jobs.get(job_id)
            if record is None or record.final:
                for event_id, event in await self._store.read_events(job_id, after_id=after):
                    after = event_id
                    yield event["kind"], event["data"]
                return
            await fail_if_orphaned(self._jobs, record)


class RpcAborted(Exception):
    """Ends a call whose status code and details are set on its context.

    A plain exception: Serve pickles it to the proxy, which answers with the context's code
    and details (an ApiError would not unpickle: its constructor takes more than the message).
    """


@contextmanager
def _errors_as_status(grpc_context: RayServegRPCContext) -> Iterator[None]:
    """Errors end the call with a status code and the HTTP API's message; an unexpected one
    with INTERNAL and no detail of the inside (logged with its traceback for operators)."""
    try:
        yield
    except ApiError as exc:
        _abort(grpc_context, exc)
    except (RpcAborted, asyncio.CancelledError):
        raise
    except Exception as exc:
        logger.error("unhandled %s in a gRPC call", type(exc).__name__, exc_info=exc)
        _abort(grpc_context, internal_error())


def _abort(grpc_context: RayServegRPCContext, exc: ApiError) -> NoReturn:
    """End the call with the status code for the error and the HTTP API's message."""
    grpc_context.set_code(grpc_code(exc.status))
    grpc_context.set_details(exc.message)
    raise RpcAborted(exc.message) from None


def _is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost"
    # A dual-stack listener ([::], as Serve binds) sees IPv4 callers as ::ffff:a.b.c.d.
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return (mapped or address).is_loopback


def _peer_is_loopback(peer: str) -> bool:
    """gRPC peers read `ipv4:127.0.0.1:5000` or `ipv6:[::1]:5000`."""
    scheme, _, address = peer.partition(":")
    if scheme == "ipv4":
        return _is_loopback(address.rpartition(":")[0])
    if scheme == "ipv6":
        return _is_loopback(address.rpartition(":")[0].strip("[]"))
    return scheme == "unix"
