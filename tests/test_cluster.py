"""The cluster data path with real processes: sharded output equals the local engine."""

from __future__ import annotations

import concurrent.futures as cf
import time

import grpc
import httpx
import pytest

from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from tests.support.chat import QUESTIONS, chat, local_texts, model_id
from tests.support.wait import wait_until


def node_statuses(cluster) -> list[pb.NodeStatus]:
    out = []
    for n in cluster.status()["nodes"]:
        with grpc.insecure_channel(n["address"]) as ch:
            out.append(pb_grpc.NodeStub(ch).Health(pb.HealthRequest(), timeout=5))
    return out


def kv_all_free(cluster) -> bool:
    return all(s.kv_free_tokens == s.kv_total_tokens for s in node_statuses(cluster))


def test_three_nodes_each_hold_a_real_shard(cluster):
    ranges = sorted(tuple(n["assignment"]["range"]) for n in cluster.status()["nodes"])
    assert len(ranges) == 3 and ranges[0][0] == 0 and ranges[-1][1] == 4
    assert all(b - a < 4 for a, b in ranges)


def test_sharded_equals_local(cluster, tiny_models):
    want = local_texts(tiny_models["llama"], QUESTIONS)
    got = [chat(cluster.http_url, q) for q in QUESTIONS]
    assert got == want


def test_eight_concurrent_streams_match_alone(cluster, tiny_models):
    qs = [f"{q} #{i}" for i, q in enumerate(QUESTIONS * 2)]
    want = local_texts(tiny_models["llama"], qs)
    with cf.ThreadPoolExecutor(8) as ex:
        got = list(ex.map(lambda q: chat(cluster.http_url, q, stream=True), qs))
    assert got == want
    wait_until(lambda: kv_all_free(cluster), 10, "every node's KV to be free")


def test_client_disconnect_frees_kv_everywhere(cluster):
    body = {
        "model": model_id(cluster.http_url),
        "messages": [{"role": "user", "content": "go on forever"}],
        "max_tokens": 400,
        "stream": True,
        "temperature": 0,
    }
    with httpx.stream(
        "POST", f"{cluster.http_url}/v1/chat/completions", json=body, timeout=60
    ) as r:
        for i, _line in enumerate(r.iter_lines()):
            if i > 6:
                break  # drop the connection mid-stream
    wait_until(lambda: kv_all_free(cluster), 15, "every node's KV to be freed")


def test_malformed_forward_is_rejected_and_node_keeps_serving(cluster):
    addr = cluster.status()["nodes"][0]["address"]
    bad = [
        pb.Tensor(data=b"\0" * 12, dtype="float32", shape=[1, 3]),  # wrong hidden size
        pb.Tensor(data=b"\0" * 256, dtype="int8", shape=[1, 256]),  # wrong dtype
        pb.Tensor(data=b"\0" * 10, dtype="float32", shape=[1, 64]),  # wrong byte count
        pb.Tensor(data=b"", dtype="float32", shape=[100000, 64]),  # oversized
    ]
    with grpc.insecure_channel(addr) as ch:
        stub = pb_grpc.NodeStub(ch)
        for t in bad:
            msg = pb.ForwardRequest(chunks=[pb.SeqChunk(request_id="x", num_tokens=1)], hidden=t)
            with pytest.raises(grpc.RpcError) as e:
                stub.Forward(msg, timeout=5)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert chat(cluster.http_url, "still there?")  # the cluster still answers


def test_fourth_node_gets_an_assignment(cluster):
    cluster.add_node("late")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        late = [n for n in cluster.status()["nodes"] if n["name"] == "late"]
        if late and late[0]["state"] in ("ready", "standby", "loading"):
            assert late[0]["assignment"] is not None
            return
        time.sleep(0.3)
    pytest.fail("the late node never got an assignment")


def test_join_with_wrong_coordinator_fails_clearly():
    from tests.support.cluster import start

    p = start(["join", "--coordinator", "127.0.0.1:1", "--threads", "1"])
    rc = p.popen.wait(60)
    assert rc != 0
    assert any("cannot reach coordinator" in line for line in p.lines)
