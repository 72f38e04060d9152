"""OpenAI compatibility on a live one-node cluster of the built-in SmolLM2, run as
`parallax run --served-model-name smol --strict-params` + one join: real
processes, real weights, the official openai client. Slow: marked e2e."""

from __future__ import annotations

import httpx
import openai
import pytest

from parallax.models.registry import resolve_model
from tests.support.chat import tool_round_trip
from tests.support.chat_templates import WEATHER_TOOL
from tests.support.cluster import Cluster

pytestmark = pytest.mark.e2e

SERVED = "smol"
ASK = [{"role": "user", "content": "What is the weather in Paris?", "name": "alice"}]


@pytest.fixture(scope="module")
def cluster():
    args = ("--served-model-name", SERVED, "--strict-params")
    with Cluster("smollm2-135m", nodes=1, min_stages=1, coordinator_args=args) as c:
        yield c


@pytest.fixture
def client(cluster) -> openai.OpenAI:
    return openai.OpenAI(api_key="none", base_url=cluster.http_url + "/v1", max_retries=0)


def _chat(client, **kwargs):
    args = {"model": SERVED, "messages": ASK, "max_tokens": 12, "temperature": 0} | kwargs
    return client.chat.completions.create(**args)


def test_served_name_and_real_context(client):
    (card,) = client.models.list().data
    positions = resolve_model("smollm2-135m").spec.max_position_embeddings
    assert card.id == SERVED
    # --max-model-len defaults to the model's positions (nodes reserve KV for it).
    assert card.model_extra["max_model_len"] == positions
    with pytest.raises(openai.NotFoundError):
        _chat(client, model="smollm2-135m")


def test_known_fields_pass_even_strict_and_bad_ones_do_not(client):
    out = _chat(client, metadata={"run": "1"}, user="u", store=False, service_tier="auto")
    assert out.model == SERVED and out.choices[0].message.content
    with pytest.raises(openai.BadRequestError, match="strict-params"):
        _chat(client, extra_body={"no_such_field": 1})
    with pytest.raises(openai.BadRequestError):
        _chat(client, user=5)


def test_tokenize_counts_the_prompt_the_cluster_gets(cluster, client):
    body = {"model": SERVED, "messages": ASK, "tools": [WEATHER_TOOL]}
    counted = httpx.post(cluster.http_url + "/tokenize", json=body, timeout=10).json()
    out = _chat(client, tools=[WEATHER_TOOL])
    assert counted["count"] == out.usage.prompt_tokens
    detok = httpx.post(cluster.http_url + "/detokenize", json={"tokens": counted["tokens"]})
    assert "What is the weather in Paris?" in detok.json()["prompt"]


def test_a_tool_round_trip_is_accepted_and_streams_like_it_answers(client):
    history = tool_round_trip(ASK)
    whole = _chat(client, messages=history, tools=[WEATHER_TOOL], seed=1)
    choice = whole.choices[0]
    assert choice.finish_reason in ("stop", "length", "tool_calls")
    streamed = list(_chat(client, messages=history, tools=[WEATHER_TOOL], seed=1, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == (choice.message.content or "")
