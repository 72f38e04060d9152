"""The gateway on a live local cluster of the built-in SmolLM2: `parallax run` + 3 joins.

Real processes, real weights, the official openai client. Slow: marked e2e.
"""

from __future__ import annotations

import concurrent.futures as cf
import time

import grpc
import httpx
import openai
import pytest

from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from tests.support.cluster import Cluster

pytestmark = pytest.mark.e2e

MODEL = "smollm2-135m"
ASK = [{"role": "user", "content": "Name three colors."}]


@pytest.fixture(scope="module")
def cluster():
    with Cluster(MODEL, nodes=3, min_stages=3) as c:
        yield c


@pytest.fixture
def client(cluster) -> openai.OpenAI:
    return openai.OpenAI(api_key="none", base_url=cluster.http_url + "/v1", max_retries=0)


def _chat(client, **kwargs):
    args = {"model": MODEL, "messages": ASK, "max_tokens": 16, "temperature": 0} | kwargs
    return client.chat.completions.create(**args)


def _streamed(client, **kwargs) -> tuple[str, list]:
    chunks = list(_chat(client, stream=True, **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


def _kv_all_free(cluster) -> tuple[bool, list[tuple[int, int]]]:
    seen = []
    for node in cluster.status()["nodes"]:
        with grpc.insecure_channel(node["address"]) as ch:
            s = pb_grpc.NodeStub(ch).Health(pb.HealthRequest(), timeout=5)
        seen.append((s.kv_free_tokens, s.kv_total_tokens))
    return all(free == total for free, total in seen), seen


def _wait_kv_free(cluster, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ok, seen = _kv_all_free(cluster)
        if ok:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"KV not freed on every node: {seen}")
        time.sleep(0.2)


def test_models_list(client):
    assert [m.id for m in client.models.list()] == [MODEL]


def test_chat_streaming_equals_non_streaming(client):
    whole = _chat(client)
    text = whole.choices[0].message.content
    assert text and whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage.completion_tokens <= 16
    streamed, chunks = _streamed(client, stream_options={"include_usage": True})
    assert streamed == text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_completions(client):
    out = client.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0
    )
    assert out.choices[0].text and out.usage.prompt_tokens > 0


def test_seed_reproducibility_and_n2(client):
    args = {"temperature": 1.0, "seed": 1234, "max_tokens": 24}
    first = _chat(client, **args).choices[0].message.content
    assert _chat(client, **args).choices[0].message.content == first
    both = _chat(client, n=2, **args)
    assert [c.index for c in both.choices] == [0, 1]
    assert both.choices[0].message.content == first  # choice 0 keeps the seed


def test_stop_string(client):
    text = _chat(client, max_tokens=24).choices[0].message.content
    words = text.split()
    assert len(words) >= 3, text
    stop = words[2]
    out = _chat(client, max_tokens=24, stop=stop).choices[0]
    assert out.finish_reason == "stop"
    assert out.message.content == text[: text.index(stop)]


def test_logprobs(client):
    out = _chat(client, logprobs=True, top_logprobs=3, max_tokens=8)
    content = out.choices[0].logprobs.content
    assert 1 <= len(content) <= 8
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        # Greedy: the chosen token is the most likely one.
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob, abs=1e-4)
    # The tokens' bytes spell exactly the text (the EOS that ended it is not reported).
    assert b"".join(bytes(e.bytes) for e in content) == out.choices[0].message.content.encode()


def test_error_cases(client):
    with pytest.raises(openai.NotFoundError):
        _chat(client, model="gpt-4o")
    tools = [{"type": "function", "function": {"name": "f"}}]
    with pytest.raises(openai.BadRequestError):  # a forced call of a tool not offered
        _chat(client, tools=tools, tool_choice={"type": "function", "function": {"name": "g"}})
    with pytest.raises(openai.BadRequestError) as err:
        _chat(client, max_tokens=10_000_000)
    assert err.value.body["code"] == "context_length_exceeded"


def test_16_concurrent_streams_each_equal_running_alone(client, cluster):
    prompts = [f"Count from {i} to {i + 5}." for i in range(16)]

    def run(p: str) -> str:
        return _streamed(client, messages=[{"role": "user", "content": p}], max_tokens=12)[0]

    alone = [run(p) for p in prompts]
    with cf.ThreadPoolExecutor(16) as pool:
        together = list(pool.map(run, prompts))
    assert together == alone
    _wait_kv_free(cluster)


def test_disconnect_frees_kv_on_every_node(cluster):
    body = {"model": MODEL, "messages": ASK, "max_tokens": 400, "stream": True, "temperature": 0}
    with httpx.stream(
        "POST", cluster.http_url + "/v1/chat/completions", json=body, timeout=60
    ) as r:
        assert r.status_code == 200
        for i, _line in enumerate(r.iter_lines()):
            if i > 4:
                break  # hang up mid-stream
    _wait_kv_free(cluster)
