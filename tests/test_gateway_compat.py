"""What real OpenAI clients send and vLLM users expect: lenient fields (and
--strict-params), --served-model-name, chat_template_kwargs, /tokenize,
/detokenize, /version and the model card's context."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import openai
import pytest

from coordinator.gateway.app import create_app
from parallax import __version__
from parallax.config.coordinator import CoordinatorConfig
from parallax.tokenizer import ChatTemplate
from tests.support.chat_templates import QWEN_TOOLS, WEATHER_TOOL
from tests.support.gateway import (
    MODEL_ID,
    TEST_CONTEXT,
    RunningGateway,
    ScriptedBackend,
    ServerThread,
)

USER = [{"role": "user", "content": "Say hello.", "name": "alice"}]


@contextmanager
def serve(tokenizer, **config: object) -> Iterator[RunningGateway]:
    backend = ScriptedBackend(tokenizer)
    app = create_app(backend, CoordinatorConfig(**config), tokenizer, MODEL_ID, TEST_CONTEXT)
    with ServerThread(app) as server:
        yield RunningGateway(backend, server)


def _chat(gw: RunningGateway, model: str = MODEL_ID, **kwargs):
    return gw.client().chat.completions.create(model=model, messages=USER, **kwargs)


LENIENT = {
    "metadata": {"team": "eval"},
    "store": True,
    "user": "u-1",
    "service_tier": "auto",
    "parallel_tool_calls": True,
    "extra_body": {"prompt_cache_key": "k", "some_vendor_flag": {"x": 1}},
}


def test_known_and_unknown_fields_are_accepted_and_unknown_ones_logged(gateway, caplog):
    with caplog.at_level(logging.INFO, logger="coordinator.gateway.params"):
        out = _chat(gateway, **LENIENT)
    assert out.choices[0].message.content
    warned = [r for r in caplog.records if r.getMessage() == "ignored unknown request fields"]
    assert [r.fields for r in warned] == [["prompt_cache_key", "some_vendor_flag"]]
    assert any("store=true ignored" in r.getMessage() for r in caplog.records)
    # the message's name reaches the template, which may use it (SmolLM2's does not)
    (req,) = gateway.backend.requests
    assert "Say hello." in gateway.backend.tokenizer.decode(req.prompt_ids)
    # the text endpoint is lenient too
    gateway.client().completions.create(
        model=MODEL_ID, prompt="Hi", max_tokens=2, extra_body={"whatever": 1}
    )


def test_a_clients_own_response_message_can_be_sent_back(gateway):
    first = _chat(gateway).choices[0].message  # has refusal=None, maybe more fields
    extra_field = {"role": "assistant", "content": "x", "annotations": [], "audio": None}
    history = [*USER, first, extra_field, {"role": "user", "content": "Again."}]
    gateway.client().chat.completions.create(model=MODEL_ID, messages=history)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"user": 5}, "user"),
        ({"store": "yes"}, "store"),
        ({"metadata": ["a"]}, "metadata"),
        ({"service_tier": 1}, "service_tier"),
        ({"parallel_tool_calls": "no"}, "parallel_tool_calls"),
        ({"messages": [{"role": "user", "content": "hi", "name": 3}]}, "messages.0.name"),
        ({"extra_body": {"chat_template_kwargs": {"messages": []}}}, "chat_template_kwargs"),
        ({"extra_body": {"chat_template_kwargs": "x"}}, "chat_template_kwargs"),
    ],
)
def test_wrong_values_are_still_400s(gateway, kwargs, param):
    args = {"model": MODEL_ID, "messages": USER} | kwargs
    with pytest.raises(openai.BadRequestError) as err:
        gateway.client().chat.completions.create(**args)
    body = err.value.response.json()["error"]
    assert body["param"] == param and body["type"] == "invalid_request_error"
    assert gateway.backend.requests == []


def test_strict_params_refuses_unknown_fields_only(tokenizer):
    with serve(tokenizer, strict_params=True) as gw:
        lenient_known = {k: v for k, v in LENIENT.items() if k != "extra_body"}
        _chat(gw, **lenient_known)
        for extra, param in (
            ({"some_vendor_flag": 1}, "some_vendor_flag"),
            ({"messages": [{"role": "user", "content": "hi", "x": 1}]}, "messages.0.x"),
        ):
            with pytest.raises(openai.BadRequestError) as err:
                _chat(gw, extra_body=extra)
            body = err.value.response.json()["error"]
            assert (body["param"], body["code"]) == (param, "unsupported_parameter")
            assert "--strict-params" in body["message"]


def test_served_model_name_is_the_only_name(tokenizer):
    with serve(tokenizer, served_model_name="team/chat-small") as gw:
        client = gw.client()
        assert [m.id for m in client.models.list()] == ["team/chat-small"]
        assert client.models.retrieve("team/chat-small").id == "team/chat-small"
        assert _chat(gw, model="team/chat-small").model == "team/chat-small"
        with pytest.raises(openai.NotFoundError):
            _chat(gw, model=MODEL_ID)
        r = httpx.post(gw.base_url + "/tokenize", json={"model": MODEL_ID, "prompt": "x"})
        assert r.status_code == 404


def test_model_card_reports_the_context(gateway):
    r = httpx.get(gateway.base_url + "/v1/models").json()["data"][0]
    assert r["max_model_len"] == r["context_length"] == TEST_CONTEXT


def test_chat_template_kwargs_reach_the_template(tokenizer):
    specials = dict(tokenizer.chat_template.special_tokens)
    qwen_like = dataclasses.replace(tokenizer, chat_template=ChatTemplate(QWEN_TOOLS, specials))
    with serve(qwen_like) as gw:
        for kwargs, thinking_off in (({}, False), ({"enable_thinking": False}, True)):
            _chat(gw, extra_body={"chat_template_kwargs": kwargs})
            ids = gw.backend.requests[-1].prompt_ids
            prompt = qwen_like.decode(ids, skip_special_tokens=False)
            assert prompt.endswith("<think>\n\n</think>\n\n") == thinking_off


def test_tokenize_detokenize_round_trip(gateway, tokenizer):
    url = gateway.base_url
    text = "Hello, café — 日本語 🙂 <|im_end|>"
    r = httpx.post(url + "/tokenize", json={"prompt": text, "return_token_strs": True}).json()
    assert r["tokens"] == tokenizer.encode(text, add_special_tokens=True)
    assert r["count"] == len(r["tokens"]) and r["max_model_len"] == TEST_CONTEXT
    assert r["token_strs"] == [tokenizer.id_to_token(i) for i in r["tokens"]]
    back = httpx.post(url + "/detokenize", json={"model": MODEL_ID, "tokens": r["tokens"]})
    assert back.json() == {"prompt": text}


def test_tokenize_messages_counts_what_the_chat_endpoint_sends(gateway, tokenizer):
    body = {"model": MODEL_ID, "messages": USER, "tools": [WEATHER_TOOL]}
    r = httpx.post(gateway.base_url + "/tokenize", json=body).json()
    out = _chat(gateway, tools=[WEATHER_TOOL])
    assert r["count"] == out.usage.prompt_tokens
    assert tuple(r["tokens"]) == gateway.backend.requests[-1].prompt_ids
    bare = httpx.post(
        gateway.base_url + "/tokenize", json={"messages": USER, "add_generation_prompt": False}
    ).json()
    assert bare["count"] < r["count"]


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/tokenize", {"prompt": "x", "messages": USER}, 400),
        ("/tokenize", {}, 400),
        ("/tokenize", {"prompt": 5}, 400),
        ("/tokenize", {"messages": USER, "add_special_tokens": True}, 400),
        ("/tokenize", {"prompt": "x", "model": "gpt-5"}, 404),
        ("/detokenize", {"tokens": [1, 10**9]}, 400),
        ("/detokenize", {"tokens": ["a"]}, 400),
        ("/detokenize", {"tokens": [-1]}, 400),
    ],
)
def test_tokenize_errors_are_openai_shaped(gateway, path, body, status):
    r = httpx.post(gateway.base_url + path, json=body)
    assert r.status_code == status
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_version_is_open_and_tokenize_needs_the_key(tokenizer):
    with serve(tokenizer, api_key=("k1",)) as gw:
        assert httpx.get(gw.base_url + "/version").json() == {"version": __version__}
        assert httpx.post(gw.base_url + "/tokenize", json={"prompt": "x"}).status_code == 401
        ok = httpx.post(
            gw.base_url + "/detokenize",
            json={"tokens": [6004]},
            headers={"Authorization": "Bearer k1"},
        )
        assert ok.json() == {"prompt": "hi"}
