"""The gRPC API through Ray Serve's real gRPC proxy, with `grpcio`: unary, streaming, a client
deadline that cancels the search, Cancel, and API keys checked as over HTTP."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import psutil
import pytest
from ray import serve

from cluster.auth import hash_key
from cluster.local import APP_NAME, LocalCluster
from cluster.rpc import reasoning_pb2 as pb
from cluster.rpc.reasoning_pb2_grpc import ReasoningStub
from deployments.gateway import Gateway
from deployments.rpc import _is_loopback

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

QUESTION = "If 3 pencils cost 45 cents, how many cents do 7 pencils cost?"
# A second application whose gateway has tenants (the session cluster is open): gRPC calls
# name their application in metadata once Serve holds more than one.
KEYED_APP = "keyed"
KEY = "sk-acme-grpc-test"
MAIN = (("application", APP_NAME),)


@pytest.fixture(scope="module")
def stub(cluster: LocalCluster) -> Iterator[ReasoningStub]:
    assert cluster.grpc_target is not None
    with grpc.insecure_channel(cluster.grpc_target) as channel:
        yield ReasoningStub(channel)


@pytest.fixture(scope="module")
def keyed_app(cluster: LocalCluster) -> Iterator[str]:
    config = cluster.config.with_overrides(
        {"auth": {"tenants": {"acme": {"api_key_sha256": hash_key(KEY), "max_effort": "low"}}}}
    )
    workers = [
        serve.get_deployment_handle(name, APP_NAME)
        for name in ("Planner", "BranchGenerator", "Verifier", "JobRunner")
    ]
    # The builder's resources for a gateway (Serve's default would ask for a whole CPU).
    actor = {"num_cpus": config.deployments.gateway.num_cpus}
    serve.run(
        Gateway.options(name="KeyedGateway", ray_actor_options=actor).bind(  # type: ignore[attr-defined]
            config, *workers
        ),
        name=KEYED_APP,
        route_prefix=f"/{KEYED_APP}",
    )
    yield KEYED_APP
    serve.delete(KEYED_APP)


def _tree(cluster: LocalCluster, tree_id: str) -> dict[str, Any]:
    response = httpx.get(f"{cluster.url}/v1/trees/{tree_id}", timeout=10)
    response.raise_for_status()
    return dict(response.json())


def _wait_for(what: str, probe: Callable[[], Any], timeout_s: float = 120) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_grpc_port_listens_on_loopback_only(cluster: LocalCluster) -> None:
    # Serve's proxy binds every interface; the local cluster's worker setup hook rebinds it.
    processes = [psutil.Process(os.getpid()), *psutil.Process(os.getpid()).children(recursive=True)]
    addresses = set()
    for process in processes:
        try:
            connections = process.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue  # ended since the listing
        listening = [c for c in connections if c.status == psutil.CONN_LISTEN]
        addresses |= {c.laddr.ip for c in listening if c.laddr.port == cluster.grpc_port}
    assert addresses and all(_is_loopback(address) for address in addresses), addresses


def test_reason_answers_with_usage_from_the_ledger(stub: ReasoningStub, cluster: LocalCluster) -> None:
    request = pb.ReasonRequest(input=QUESTION, effort="none", summary="concise", max_output_tokens=48)
    response = stub.Reason(request, metadata=MAIN, timeout=120)
    assert response.id == f"resp_{response.tree_id}" and response.status in {"completed", "incomplete"}
    assert response.answer.strip() and response.effort == "none"
    assert len(response.summary) == 1 and response.summary[0].startswith("Answer: ")
    tree = _tree(cluster, response.tree_id)
    spent = tree["budget"]["spent"]["tokens"]
    assert response.usage.reasoning_tokens == response.usage.output_tokens == spent > 0
    stored = stub.GetTree(pb.GetTreeRequest(tree_id=response.tree_id), metadata=MAIN, timeout=30)
    assert stored.meta.status == "done" and list(stored.winning_path) == tree["winning_path"]
    assert dict(stored.budget.spent) == tree["budget"]["spent"]
    assert {node.node_id for node in stored.nodes} == {node["node_id"] for node in tree["nodes"]}
    # The same response over HTTP.
    http = httpx.get(f"{cluster.url}/v1/responses/{response.id}", timeout=10).json()
    assert http["output"][-1]["content"][0]["text"] == response.answer


def test_reason_stream_sends_progress_then_the_answer(stub: ReasoningStub, cluster: LocalCluster) -> None:
    request = pb.ReasonRequest(input=QUESTION, effort="none", max_output_tokens=48)
    events = list(stub.ReasonStream(request, metadata=MAIN, timeout=120))
    assert [event.sequence_number for event in events] == list(range(len(events)))
    *progress, last = events
    assert progress and all(event.WhichOneof("event") == "progress" for event in progress)
    kinds = [event.progress.kind for event in progress]
    assert "chains" in kinds and kinds[-1] == "done"
    assert all(event.progress.text for event in progress)
    assert last.WhichOneof("event") == "response"
    final = last.response
    assert final.answer.strip() and final.usage.reasoning_tokens > 0
    assert final.usage.reasoning_tokens == _tree(cluster, final.tree_id)["budget"]["spent"]["tokens"]


def test_a_client_deadline_cancels_the_search(stub: ReasoningStub, cluster: LocalCluster) -> None:
    request_id = f"late-{uuid.uuid4().hex[:12]}"
    request = pb.ReasonRequest(input=QUESTION, effort="high", request_id=request_id)
    with pytest.raises(grpc.RpcError) as raised:
        stub.Reason(request, metadata=MAIN, timeout=3)
    assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED

    def ended() -> dict[str, Any] | None:
        tree = _tree(cluster, request_id)
        return tree if tree["meta"]["status"] != "running" else None

    tree = _wait_for("the search to stop", ended)
    assert tree["meta"]["status"] == "cancelled"
    assert tree["budget"]["reserved"]["tokens"] == 0

    def cancelled() -> pb.ReasonResponse | None:
        # The response is named by the tree, whose id is the request id in the caller's namespace.
        response_id = f"resp_{tree['meta']['tree_id']}"
        response = stub.GetResponse(pb.ResponseRequest(id=response_id), metadata=MAIN, timeout=30)
        return response if response.status == "cancelled" else None

    _wait_for("the response to say so", cancelled)


def test_cancel_a_background_response(stub: ReasoningStub, cluster: LocalCluster) -> None:
    queued = stub.Reason(
        pb.ReasonRequest(input=QUESTION, effort="high", background=True), metadata=MAIN, timeout=30
    )
    assert queued.status == "queued"

    def reserving() -> bool:
        return bool(_tree(cluster, queued.tree_id)["budget"]["reserved"].get("tokens", 0) > 0)

    _wait_for("a reservation", reserving)
    cancelled = stub.Cancel(pb.CancelRequest(id=queued.id), metadata=MAIN, timeout=60)
    assert cancelled.status == "cancelled" and cancelled.id == queued.id
    tree = _tree(cluster, queued.tree_id)
    assert tree["meta"]["status"] == "cancelled" and tree["budget"]["reserved"]["tokens"] == 0


def test_errors_are_status_codes_with_the_http_messages(stub: ReasoningStub, cluster: LocalCluster) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.Reason(pb.ReasonRequest(input=QUESTION, effort="extreme"), metadata=MAIN, timeout=30)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    http = httpx.post(
        f"{cluster.url}/v1/responses",
        json={"model": "default", "input": QUESTION, "reasoning": {"effort": "extreme"}},
        timeout=30,
    ).json()
    assert raised.value.details() == http["error"]["message"]
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetTree(pb.GetTreeRequest(tree_id="no-such-tree"), metadata=MAIN, timeout=30)
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND


def test_api_keys_are_checked(stub: ReasoningStub, keyed_app: str) -> None:
    request = pb.ReasonRequest(input=QUESTION, effort="none", max_output_tokens=32)
    app = ("application", keyed_app)
    with pytest.raises(grpc.RpcError) as bad:
        stub.Reason(request, metadata=(app, ("authorization", "Bearer sk-wrong-key")), timeout=30)
    assert bad.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert bad.value.details() == "the API key is not valid for this service"
    with pytest.raises(grpc.RpcError) as none:
        stub.Reason(request, metadata=(app,), timeout=30)
    assert none.value.code() is grpc.StatusCode.UNAUTHENTICATED
    above = pb.ReasonRequest(input=QUESTION, effort="high")
    with pytest.raises(grpc.RpcError) as ceiling:
        stub.Reason(above, metadata=(app, ("authorization", f"Bearer {KEY}")), timeout=30)
    assert ceiling.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "ceiling 'low'" in ceiling.value.details()
    answered = stub.Reason(request, metadata=(app, ("authorization", f"Bearer {KEY}")), timeout=120)
    assert answered.status in {"completed", "incomplete"} and answered.answer.strip()
    # Responses are scoped to their tenant: another caller does not find it.
    with pytest.raises(grpc.RpcError) as foreign:
        stub.GetResponse(pb.ResponseRequest(id=answered.id), metadata=MAIN, timeout=30)
    assert foreign.value.code() is grpc.StatusCode.NOT_FOUND
