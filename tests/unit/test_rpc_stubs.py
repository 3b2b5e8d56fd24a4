"""The committed gRPC stubs are what `python -m cluster.rpc.codegen` makes of the .proto today,
and the proto's messages map onto the HTTP API's objects."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from cluster.api import ApiError
from cluster.rpc import codegen
from cluster.rpc import reasoning_pb2 as pb
from cluster.rpc.messages import grpc_code, request_body, response_message

pytestmark = pytest.mark.unit


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    generated = codegen.generate(tmp_path)
    for path in generated:
        committed = codegen.SOURCE_ROOT / path.relative_to(tmp_path)
        assert committed.read_bytes() == path.read_bytes(), (
            f"{committed.name} is stale: run python -m cluster.rpc.codegen"
        )


def test_service_is_reasoning_v1() -> None:
    service = pb.DESCRIPTOR.services_by_name["Reasoning"]
    assert service.full_name == "reasoning.v1.Reasoning"
    methods = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert methods == {
        "Reason": (False, False),
        "ReasonStream": (False, True),
        "GetTree": (False, False),
        "Cancel": (False, False),
        "GetResponse": (False, False),
        "FollowResponse": (False, True),
    }


def test_a_reason_request_is_a_responses_body() -> None:
    request = pb.ReasonRequest(input="4 9 10 13", effort="low", task="game24", max_output_tokens=64, seed=3)
    assert request_body(request) == {
        "model": "default",
        "input": "4 9 10 13",
        "reasoning": {"effort": "low", "summary": None},
        "task": "game24",
        "metadata": {},
        "background": False,
        "max_output_tokens": 64,
        "seed": 3,
    }
    messages = pb.ReasonRequest(messages=[pb.Message(role="user", content="hi")], summary="concise")
    assert request_body(messages)["input"] == [{"role": "user", "content": "hi"}]
    with pytest.raises(ApiError, match="exactly one of input and messages"):
        request_body(pb.ReasonRequest())


def test_response_and_errors_map_onto_the_http_api() -> None:
    stored = {
        "id": "resp_t1",
        "status": "completed",
        "model": "default",
        "output": [
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Answer: 105 (voted)."}]},
            {"type": "message", "content": [{"type": "output_text", "text": "105"}]},
        ],
        "usage": {
            "input_tokens": 30,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 50,
            "output_tokens_details": {"reasoning_tokens": 50},
            "total_tokens": 80,
        },
        "incomplete_details": None,
        "error": None,
        "reasoning": {"effort": "low", "tree_id": "t1", "strategy": "single_chain"},
    }
    message = response_message(stored)
    assert (message.id, message.status, message.answer) == ("resp_t1", "completed", "105")
    assert message.tree_id == "t1"
    assert list(message.summary) == ["Answer: 105 (voted)."]
    assert (message.usage.reasoning_tokens, message.usage.total_tokens) == (50, 80)
    assert not message.HasField("error")
    assert grpc_code(400) is grpc.StatusCode.INVALID_ARGUMENT
    assert grpc_code(401) is grpc.StatusCode.UNAUTHENTICATED
    assert grpc_code(504) is grpc.StatusCode.DEADLINE_EXCEEDED
    assert grpc_code(500) is grpc.StatusCode.INTERNAL


@pytest.mark.parametrize(
    ("peer", "loopback"),
    [
        ("ipv4:127.0.0.1:50123", True),
        ("ipv6:[::1]:50123", True),
        ("ipv6:[::ffff:127.0.0.1]:50123", True),
        ("ipv6:[::ffff:192.168.1.9]:50123", False),
        ("ipv4:10.1.2.3:50123", False),
        ("ipv6:[2001:db8::5]:443", False),
        ("unix:/tmp/grpc.sock", True),
    ],
)
def test_loopback_peers(peer: str, loopback: bool) -> None:
    # Serve's gRPC proxy binds every interface: the gateway tells loopback callers apart.
    from deployments.rpc import _peer_is_loopback

    assert _peer_is_loopback(peer) is loopback
