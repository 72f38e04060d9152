"""Every error case: OpenAI error JSON, the right status, the right openai exception."""

from __future__ import annotations

import httpx
import openai
import pytest

from parallax.errors import CapacityError, NotCovered
from tests.support.gateway import (
    MODEL_ID,
    TEST_CONTEXT,
    RunningGateway,
    ScriptedBackend,
    running_gateway,
)

USER = [{"role": "user", "content": "Say hello."}]


def _chat(gw: RunningGateway, **kwargs):
    args = {"model": MODEL_ID, "messages": USER} | kwargs
    return gw.client().chat.completions.create(**args)


def _error_body(err: openai.APIStatusError) -> dict:
    body = err.response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"tool_choice": "required"}, "tool_choice"),  # forcing a call needs tools
        ({"tools": [{"type": "function", "function": {"name": 3}}]}, "tools.0.function.name"),
        ({"extra_body": {"functions": [{"name": "f"}]}}, "functions"),
        ({"metadata": {"k": 1}}, "metadata.k"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "nope"}},
                }
            },
            "response_format",
        ),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"temperature": 5}, "temperature"),
        ({"n": 17}, "n"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"logit_bias": {"abc": 1.0}}, "logit_bias"),
        ({"logit_bias": {"99999999": 1.0}}, None),
        ({"seed": -1}, "seed"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0"),  # no tool_call_id
        ({"messages": [{"role": "function", "content": "x"}]}, "messages.0.role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages.0.content",
        ),
    ],
)
def test_bad_parameters_are_400s_naming_the_parameter(gateway, kwargs, param):
    with pytest.raises(openai.BadRequestError) as err:
        _chat(gateway, **kwargs)
    body = _error_body(err.value)
    assert body["type"] == "invalid_request_error"
    if param is not None:
        assert body["param"] == param
        assert param.split(".")[0] in body["message"]
    assert gateway.backend.requests == []


def test_neutral_values_of_unsupported_parameters_are_accepted(gateway):
    _chat(gateway, response_format={"type": "text"}, store=False)


def test_malformed_json_is_a_400(gateway):
    r = httpx.post(
        gateway.base_url + "/v1/chat/completions",
        content=b'{"model": "x", "messages": [',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"


def test_context_overflow_is_a_400(gateway, tokenizer):
    prompt_len = len(tokenizer.encode_chat(USER))
    with pytest.raises(openai.BadRequestError) as err:
        _chat(gateway, max_tokens=TEST_CONTEXT - prompt_len + 1)
    assert _error_body(err.value)["code"] == "context_length_exceeded"
    assert str(TEST_CONTEXT - prompt_len) in err.value.message
    _chat(gateway, max_tokens=TEST_CONTEXT - prompt_len)  # exactly full is fine
    long_prompt = [{"role": "user", "content": "word " * TEST_CONTEXT}]
    with pytest.raises(openai.BadRequestError):
        _chat(gateway, messages=long_prompt)


def test_unknown_model_and_route_are_404s(gateway):
    with pytest.raises(openai.NotFoundError) as err:
        _chat(gateway, model="gpt-5")
    assert _error_body(err.value)["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        gateway.client().models.retrieve("gpt-5")
    r = httpx.get(gateway.base_url + "/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_models_endpoints(gateway):
    client = gateway.client()
    assert [m.id for m in client.models.list()] == [MODEL_ID]
    model = client.models.retrieve(MODEL_ID)
    assert model.object == "model" and model.owned_by == "parallax"


def test_api_keys(tokenizer):
    with running_gateway(tokenizer, api_keys=("k1", "k2")) as gw:
        with pytest.raises(openai.AuthenticationError):
            gw.client(api_key="wrong").models.list()
        r = httpx.get(gw.base_url + "/v1/models")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert r.headers["www-authenticate"] == "Bearer"
        assert [m.id for m in gw.client(api_key="k2").models.list()] == [MODEL_ID]
        assert _chat_with(gw, "k1").choices[0].finish_reason == "stop"
        assert httpx.get(gw.base_url + "/health").status_code == 200


def _chat_with(gw: RunningGateway, key: str):
    return gw.client(api_key=key).chat.completions.create(model=MODEL_ID, messages=USER)


def test_not_covered_is_a_503_saying_what_is_missing(tokenizer):
    missing = NotCovered("no node holds layers [10,30) of 30; wait for nodes to join")
    backend = ScriptedBackend(tokenizer, ready_error=missing)
    with running_gateway(tokenizer, backend) as gw:
        with pytest.raises(openai.InternalServerError) as err:
            _chat(gw)
        assert err.value.status_code == 503
        assert "[10,30)" in err.value.message
        health = httpx.get(gw.base_url + "/health")
        assert health.status_code == 503 and "[10,30)" in health.json()["reason"]


def test_saturation_is_a_429_with_retry_after(tokenizer):
    backend = ScriptedBackend(tokenizer, ready_error=CapacityError("no KV left"))
    with running_gateway(tokenizer, backend) as gw:
        with pytest.raises(openai.RateLimitError) as err:
            _chat(gw, stream=True)
        assert int(err.value.response.headers["retry-after"]) >= 1


@pytest.mark.parametrize("stream", [False, True])
def test_errors_before_the_first_token_keep_their_status(tokenizer, stream):
    backend = ScriptedBackend(tokenizer, start_error=CapacityError("first node full"))
    with running_gateway(tokenizer, backend) as gw:
        with pytest.raises(openai.RateLimitError):
            _chat(gw, stream=stream, n=2)


def test_a_failure_mid_stream_is_an_error_event(tokenizer):
    backend = ScriptedBackend(tokenizer, fail_after=3)
    with running_gateway(tokenizer, backend) as gw:
        with pytest.raises(openai.APIError, match="node died"):
            list(_chat(gw, stream=True))
        with pytest.raises(openai.InternalServerError) as err:
            _chat(gw)
        assert err.value.status_code == 503


def test_openapi_and_health_are_served(gateway):
    spec = httpx.get(gateway.base_url + "/openapi.json").json()
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health"} <= set(
        spec["paths"]
    )
    assert httpx.get(gateway.base_url + "/health").json()["status"] == "ok"


def test_an_oversized_body_is_a_413_whether_declared_or_chunked(gateway):
    url = gateway.base_url + "/v1/chat/completions"
    headers = {"Content-Type": "application/json"}
    big = b" " * (9 * 2**20)  # over the default 8 MiB
    for content in (big, iter([big[: 2**20]] * 9)):  # with Content-Length, then chunked
        r = httpx.post(url, content=content, headers=headers, timeout=30)
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "request_too_large"
        assert "--max-request-mb" in r.json()["error"]["message"]
    assert gateway.backend.requests == []
    _chat(gateway)  # the gateway still serves
