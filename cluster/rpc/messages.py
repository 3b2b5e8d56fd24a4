"""Between `reasoning.v1` messages and the service's own objects (Responses API bodies, trees).

A `ReasonRequest` becomes the body of a `POST /v1/responses`, so both transports validate the
same way and fail with the same messages; HTTP statuses map onto gRPC status codes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import grpc

from cluster.api import ApiError
from cluster.responses import output_text, summary_texts
from cluster.rpc import reasoning_pb2 as pb
from cluster.store import ThoughtTree
from cluster.streaming import describe_event

# The gRPC status for each HTTP status the API answers with.
STATUS_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ALREADY_EXISTS,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def grpc_code(status: int) -> grpc.StatusCode:
    return STATUS_CODES.get(status, grpc.StatusCode.INTERNAL)


def request_body(request: pb.ReasonRequest) -> dict[str, Any]:
    """The `POST /v1/responses` body a ReasonRequest stands for (validated by the caller)."""
    if bool(request.input) == bool(request.messages):
        raise ApiError(400, "set exactly one of input and messages", param="input")
    body: dict[str, Any] = {
        "model": request.model or "default",
        "input": request.input or [{"role": m.role, "content": m.content} for m in request.messages],
        "reasoning": {"effort": request.effort or None, "summary": request.summary or None},
        "task": request.task or "general",
        "metadata": dict(request.metadata),
        "background": request.background,
    }
    optional = {
        "instructions": request.instructions or None,
        "max_output_tokens": request.max_output_tokens or None,
        "strategy": request.strategy or None,
        "seed": request.seed if request.HasField("seed") else None,
    }
    return body | {name: value for name, value in optional.items() if value is not None}


def response_message(response: Mapping[str, Any]) -> pb.ReasonResponse:
    """A stored Response object (the HTTP API's JSON) as a ReasonResponse."""
    reasoning = response.get("reasoning") or {}
    message = pb.ReasonResponse(
        id=response["id"],
        status=response["status"],
        answer=output_text(response),
        summary=summary_texts(response),
        tree_id=reasoning.get("tree_id", ""),
        effort=reasoning.get("effort", ""),
        strategy=reasoning.get("strategy", ""),
        incomplete_reason=(response.get("incomplete_details") or {}).get("reason", ""),
        model=response.get("model", ""),
    )
    usage = response.get("usage")
    if usage:
        message.usage.CopyFrom(
            pb.Usage(
                input_tokens=usage["input_tokens"],
                cached_tokens=usage["input_tokens_details"]["cached_tokens"],
                output_tokens=usage["output_tokens"],
                reasoning_tokens=usage["output_tokens_details"]["reasoning_tokens"],
                total_tokens=usage["total_tokens"],
            )
        )
    error = response.get("error")
    if error:
        message.error.CopyFrom(pb.Error(code=str(error.get("code") or ""), message=error["message"]))
    return message


def progress_message(kind: str, data: Mapping[str, Any]) -> pb.Progress:
    return pb.Progress(kind=kind, text=describe_event(kind, data), data_json=json.dumps(dict(data)))


def tree_message(tree: ThoughtTree) -> pb.Tree:
    meta = tree.meta
    return pb.Tree(
        meta=pb.TreeMeta(
            tree_id=meta.tree_id,
            owner=meta.owner,
            effort=meta.effort,
            strategy=meta.strategy,
            status=meta.status,
            created_at=meta.created_at,
            updated_at=meta.updated_at,
            model=meta.model,
            question=meta.question,
            extra=dict(meta.extra),
        ),
        nodes=[
            pb.Node(
                node_id=node.node_id,
                parent_id=node.parent_id or "",
                depth=node.depth,
                text=node.text,
                prompt_tokens=node.prompt_tokens,
                completion_tokens=node.completion_tokens,
                cached_tokens=node.cached_tokens,
                score=node.score,
                scores=node.scores,
                status=node.status,
                answer=node.answer or "",
            )
            for node in tree.nodes
        ],
        winning_path=tree.winning_path,
        budget=pb.Budget(granted=tree.budget.granted, spent=tree.budget.spent, reserved=tree.budget.reserved),
    )
