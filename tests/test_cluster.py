"""The cluster data path with real processes: sharded output equals the local engine."""

from __future__ import annotations

import concurrent.futures as cf
import time

import grpc
import httpx
import pytest

from parallax.models.registry import resolve_model
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from parallax.sampling import SamplingParams
from parallax.tokenizer import Tokenizer
from tests.engine_helpers import local_engine
from tests.support.cluster import Cluster
from tests.support.wait import wait_until

QUESTIONS = ["hello there", "what is 2+2?", "tell me a story", "name three colors"]


def model_id(url: str) -> str:
    return httpx.get(f"{url}/v1/models", timeout=10).json()["data"][0]["id"]


def chat(url: str, content: str, max_tokens: int = 12, stream: bool = False) -> str:
    body = {
        "model": model_id(url),
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    if not stream:
        r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
        r.raise_for_status()
        return r.json()["choices"][0]["message"]["content"]
    body["stream"] = True
    text = ""
    import json

    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                for ch in json.loads(line[6:])["choices"]:
                    text += ch["delta"].get("content") or ""
    return text


def local_texts(path, questions, max_tokens=12) -> list[str]:
    tok = Tokenizer.from_model(resolve_model(str(path)))
    eng = local_engine(path, eos_ids=tok.eos_token_ids, vocab_limit=tok.vocab_size)
    out = []
    for q in questions:
        ids = tok.encode_chat([{"role": "user", "content": q}])
        gen = eng.generate([ids], SamplingParams(max_tokens=max_tokens))[0]
        gen = [t for t in gen if t not in tok.eos_token_ids]
        out.append(tok.decode(gen))
    return out


@pytest.fixture(scope="module")
def cluster(tiny_models):
    with Cluster(str(tiny_models["llama"]), nodes=3, min_stages=3) as c:
        yield c


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
