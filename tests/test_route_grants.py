"""Route grants on a live cluster (real processes): anyone who reaches a node or the
gateway's Deliver without the request's grant is refused or ignored, and the victim's
stream is exactly what it is undisturbed. One test per attack of issue 11."""

from __future__ import annotations

import threading
import time

import grpc
import httpx
import pytest

from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from parallax.rpc.grants import RouteSigner
from parallax.sampling import SamplingParams
from tests.support.cluster import Cluster
from tests.support.wait import wait_until

MAX_TOKENS = 450
ASK = [{"role": "user", "content": "keep talking"}]


def _stream(url: str, model: str) -> str:
    body = {
        "model": model,
        "messages": ASK,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }
    text = []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: {"):
                import json

                choices = json.loads(line[6:])["choices"]
                text += [c["delta"].get("content") or "" for c in choices]
    return "".join(text)


@pytest.fixture(scope="module")
def cluster(tiny_models):
    with Cluster(str(tiny_models["llama"]), nodes=3, min_stages=3) as c:
        c.model_id = httpx.get(f"{c.http_url}/v1/models", timeout=10).json()["data"][0]["id"]
        c.undisturbed = _stream(c.http_url, c.model_id)
        yield c


def _under_attack(cluster, attack) -> tuple[str, object]:
    """Run the victim's stream while `attack(victim_request_id, route_nodes)` runs."""
    got: dict[str, str] = {}
    victim = threading.Thread(
        target=lambda: got.update(text=_stream(cluster.http_url, cluster.model_id))
    )
    victim.start()

    def active():
        act = cluster.status()["traffic"]["active"]
        return act[0] if act and act[0]["tokens"] >= 2 else None

    req = wait_until(active, 20, "the victim's stream to start")
    nodes = {n["node_id"]: n for n in cluster.status()["nodes"]}
    route = [nodes[h["node_id"]] for h in req["route"]]
    outcome = attack(req["request_id"], route)
    victim.join(120)
    return got["text"], outcome


def _code(call) -> grpc.StatusCode | None:
    try:
        call()
    except grpc.RpcError as e:
        return e.code()
    return None


def test_a_deliver_injection_is_refused_and_the_victim_text_is_untouched(cluster):
    gateway = cluster.grpc_address  # the gateway's Deliver is served beside the control plane

    def inject(rid, route):
        last = route[-1]["node_id"]
        forged = pb.TokenBatch(
            sender_id=last,  # claims to be the last hop; it cannot MAC as that node
            events=[pb.TokenEvent(request_id=rid, token_id=5, index=3, mac=b"x" * 32)],
        )
        with grpc.insecure_channel(gateway) as ch:
            return [
                _code(lambda: pb_grpc.GatewayStub(ch).Deliver(forged, timeout=5)) for _ in range(5)
            ]

    text, codes = _under_attack(cluster, inject)
    assert codes == [grpc.StatusCode.PERMISSION_DENIED] * 5
    assert text == cluster.undisturbed
    metrics = httpx.get(f"{cluster.http_url}/metrics", timeout=5).text
    assert "parallax_denied_deliveries_total 5.0" in metrics


def test_release_push_and_forward_aimed_at_another_request_change_nothing(cluster):
    def meddle(rid, route):
        first, last = route[0]["address"], route[-1]["address"]
        for address in {h["address"] for h in route}:
            with grpc.insecure_channel(address) as ch:
                stub = pb_grpc.NodeStub(ch)
                stub.Release(pb.ReleaseRequest(request_ids=[rid], reason="abort"), timeout=5)
                stub.Release(pb.ReleaseRequest(kv_only={rid: 99}, reason="abort"), timeout=5)
        with grpc.insecure_channel(first) as ch:
            bogus = pb.TokenBatch(events=[pb.TokenEvent(request_id=rid, token_id=7)])
            pb_grpc.NodeStub(ch).PushTokens(bogus, timeout=5)
        with grpc.insecure_channel(last) as ch:
            msg = pb.ForwardRequest(sender_id=route[0]["node_id"])
            msg.chunks.add(request_id=rid, start_pos=5000, num_tokens=1, sample=True)
            msg.hidden.dtype, msg.hidden.data = "float32", b"\0" * 4 * 64
            msg.hidden.shape.extend([1, 64])
            return _code(lambda: pb_grpc.NodeStub(ch).Forward(msg, timeout=5))

    text, _ = _under_attack(cluster, meddle)
    assert text == cluster.undisturbed
    denied = httpx.get(f"{cluster.http_url}/cluster/status", timeout=5).status_code
    assert denied == 200  # the cluster still serves its status


def test_a_submit_without_a_valid_grant_is_permission_denied(cluster):
    st = cluster.status()
    first = min(st["nodes"], key=lambda n: n["assignment"]["range"][0])
    route = pb.Route()
    for n in sorted(st["nodes"], key=lambda n: n["assignment"]["range"][0]):
        a, b = n["assignment"]["range"]
        route.hops.add(node_id=n["node_id"], address=n["address"], start=a, end=b)
    submit = pb.SubmitRequest(
        request_id="stranger-1",
        prompt_ids=[5, 6, 7],
        sampling=SamplingParams(max_tokens=4).to_proto(),
        route=route,
        reply_to="127.0.0.1:9",
    )
    forged = pb.SubmitRequest()
    forged.CopyFrom(submit)
    forged.capability.CopyFrom(RouteSigner.generate().sign(submit))  # someone else's key
    with grpc.insecure_channel(first["address"]) as ch:
        stub = pb_grpc.NodeStub(ch)
        assert _code(lambda: stub.Submit(submit, timeout=5)) == grpc.StatusCode.PERMISSION_DENIED
        assert _code(lambda: stub.Submit(forged, timeout=5)) == grpc.StatusCode.PERMISSION_DENIED
    time.sleep(0.5)
    metrics = [w.wait_for(r"node metrics listening on (\S+)", 10).group(1) for w in cluster.workers]
    denied = sum(
        float(line.rsplit(" ", 1)[1])
        for url in metrics
        for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines()
        if line.startswith("parallax_node_denied_total")
    )
    assert denied >= 2
