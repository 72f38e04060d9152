"""Tool calling through the official client: tools rendered by the model's chat
template (compared with transformers), calls parsed out of the model's text,
streamed deltas that assemble into exactly the non-streamed call, a second turn
carrying the tool's result, forced calls as grammars, and what is refused."""

from __future__ import annotations

import dataclasses
import json

import openai
import pytest

from parallax.tokenizer import ChatTemplate
from tests.support.chat import tool_round_trip
from tests.support.chat_templates import QWEN_TOOLS, WEATHER_TOOL
from tests.support.gateway import MODEL_ID, ScriptedBackend, running_gateway

USER = [{"role": "user", "content": "What is the weather in Paris?"}]
CALL_TEXT = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
TWO_CALLS = f"Checking both.\n{CALL_TEXT}\n{CALL_TEXT.replace('Paris', 'Zürich')}"


@pytest.fixture(scope="module")
def qwen_like(tokenizer):
    """SmolLM2's tokenizer (ChatML specials) with a Qwen-style template that renders tools."""
    specials = dict(tokenizer.chat_template.special_tokens)
    return dataclasses.replace(tokenizer, chat_template=ChatTemplate(QWEN_TOOLS, specials))


def _gateway(tok, text: str, **backend_kwargs):
    backend = ScriptedBackend(tok, script=tuple(tok.encode(text)), **backend_kwargs)
    return running_gateway(tok, backend)


def _prompt_text(gw, tok) -> str:
    return tok.decode(gw.backend.requests[-1].prompt_ids, skip_special_tokens=False)


def test_tools_reach_the_template_like_transformers_renders_them(qwen_like):
    from transformers.utils.chat_template_utils import render_jinja_template

    history = tool_round_trip(USER)
    # transformers takes the arguments as an object; OpenAI clients send JSON text
    theirs_history = json.loads(json.dumps(history))
    theirs_history[1]["tool_calls"][0]["function"]["arguments"] = {"city": "Paris"}
    theirs_history[1].pop("content")
    for kwargs in ({}, {"enable_thinking": False}):
        theirs = render_jinja_template(
            [theirs_history],
            tools=[WEATHER_TOOL],
            chat_template=QWEN_TOOLS,
            add_generation_prompt=True,
            **kwargs,
        )
        ours = qwen_like.apply_chat_template(history, tools=[WEATHER_TOOL], template_kwargs=kwargs)
        assert ours == theirs[0][0]
    assert '"name": "get_weather", "arguments": {"city": "Paris"}' in ours
    assert ours.endswith("<think>\n\n</think>\n\n")


def test_a_tool_call_in_the_model_output_becomes_tool_calls(qwen_like):
    with _gateway(qwen_like, CALL_TEXT) as gw:
        out = gw.client().chat.completions.create(
            model=MODEL_ID, messages=USER, tools=[WEATHER_TOOL]
        )
        prompt = _prompt_text(gw, qwen_like)
    assert '"name": "get_weather"' in prompt and "<tools>" in prompt
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_without_tools_or_with_tool_choice_none_the_text_is_content(qwen_like):
    with _gateway(qwen_like, CALL_TEXT) as gw:
        client = gw.client()
        plain = client.chat.completions.create(model=MODEL_ID, messages=USER)
        none = client.chat.completions.create(
            model=MODEL_ID, messages=USER, tools=[WEATHER_TOOL], tool_choice="none"
        )
    for out in (plain, none):
        assert out.choices[0].message.content == CALL_TEXT
        assert out.choices[0].message.tool_calls is None
        assert out.choices[0].finish_reason == "stop"


def _assembled(chunks) -> dict[int, dict]:
    """What a client builds from the deltas, per choice: content and calls."""
    out: dict[int, dict] = {}
    for chunk in chunks:
        for c in chunk.choices:
            got = out.setdefault(c.index, {"content": "", "calls": {}, "finish": None})
            got["content"] += c.delta.content or ""
            got["finish"] = c.finish_reason or got["finish"]
            for d in c.delta.tool_calls or ():
                call = got["calls"].setdefault(d.index, {"id": None, "name": "", "arguments": ""})
                call["id"] = d.id or call["id"]
                call["name"] += (d.function.name or "") if d.function else ""
                call["arguments"] += (d.function.arguments or "") if d.function else ""
    return out


@pytest.mark.parametrize("text", [CALL_TEXT, TWO_CALLS, "No call needed: it is sunny."])
def test_streamed_deltas_assemble_into_the_non_streamed_answer(qwen_like, text):
    with _gateway(qwen_like, text) as gw:
        client = gw.client()
        args = {"model": MODEL_ID, "messages": USER, "tools": [WEATHER_TOOL], "n": 2}
        whole = client.chat.completions.create(**args)
        streamed = _assembled(client.chat.completions.create(**args, stream=True))
    for choice in whole.choices:
        got = streamed[choice.index]
        calls = choice.message.tool_calls or []
        assert got["content"] == (choice.message.content or "")
        assert got["finish"] == choice.finish_reason
        assert [(c["name"], c["arguments"]) for c in got["calls"].values()] == [
            (c.function.name, c.function.arguments) for c in calls
        ]
        assert all(c["id"].startswith("call_") for c in got["calls"].values())
    if text == TWO_CALLS:
        message = whole.choices[0].message
        assert message.content == "Checking both."
        assert [json.loads(c.function.arguments)["city"] for c in message.tool_calls] == [
            "Paris",
            "Zürich",
        ]


def test_the_openai_stream_helper_accumulates_the_same_call(qwen_like):
    with _gateway(qwen_like, CALL_TEXT) as gw:
        client = gw.client()
        whole = client.chat.completions.create(model=MODEL_ID, messages=USER, tools=[WEATHER_TOOL])
        with client.chat.completions.stream(
            model=MODEL_ID, messages=USER, tools=[WEATHER_TOOL]
        ) as stream:
            final = stream.get_final_completion()
    (a,), (b,) = whole.choices[0].message.tool_calls, final.choices[0].message.tool_calls
    assert (a.function.name, a.function.arguments) == (b.function.name, b.function.arguments)
    assert final.choices[0].finish_reason == "tool_calls"


def test_parallel_tool_calls_false_keeps_the_first_call(qwen_like):
    with _gateway(qwen_like, TWO_CALLS) as gw:
        out = gw.client().chat.completions.create(
            model=MODEL_ID, messages=USER, tools=[WEATHER_TOOL], parallel_tool_calls=False
        )
    assert [c.function.name for c in out.choices[0].message.tool_calls] == ["get_weather"]


def test_a_second_turn_with_the_tool_result_is_accepted(qwen_like):
    with _gateway(qwen_like, CALL_TEXT) as gw:
        client = gw.client()
        first = client.chat.completions.create(model=MODEL_ID, messages=USER, tools=[WEATHER_TOOL])
        message = first.choices[0].message
        (call,) = message.tool_calls
        history = [
            *USER,
            message,  # the client's own object, sent back as it came
            {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'},
        ]
        second = client.chat.completions.create(
            model=MODEL_ID, messages=history, tools=[WEATHER_TOOL]
        )
        prompt = _prompt_text(gw, qwen_like)
    assert second.choices[0].finish_reason == "tool_calls"  # the scripted model insists
    assert '<tool_response>\n{"temp_c": 21}\n</tool_response>' in prompt
    assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in prompt


@pytest.mark.parametrize(
    ("kwargs", "param", "why"),
    [
        (
            {"tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
            "nope",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "w", "schema": {"type": "nosuch"}},
                }
            },
            "response_format",
            "nosuch",
        ),
        (
            {"tool_choice": "required", "response_format": {"type": "json_object"}},
            "response_format",
            "both constrain",
        ),
        ({"tools": [WEATHER_TOOL, WEATHER_TOOL]}, "tools", "same function name"),
        (
            {"tools": [{"type": "function", "function": {"name": "a b"}}]},
            "tools.0.function.name",
            "",
        ),
        ({"tools": [{"type": "retrieval"}]}, "tools.0.type", ""),
    ],
)
def test_bad_tool_choices_and_schemas_are_refused_clearly(qwen_like, kwargs, param, why):
    with _gateway(qwen_like, CALL_TEXT) as gw:
        with pytest.raises(openai.BadRequestError) as err:
            gw.client().chat.completions.create(
                model=MODEL_ID, messages=USER, **({"tools": [WEATHER_TOOL]} | kwargs)
            )
        assert gw.backend.requests == []
    body = err.value.response.json()["error"]
    assert body["param"] == param
    assert why in body["message"]


@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "function": {"name": "get_weather"}}]
)
def test_a_forced_call_is_a_grammar_in_the_template_s_call_format(qwen_like, choice):
    """The grammar sent to the cluster accepts the call as the template's model writes
    it (between <tool_call> tags) and nothing else."""
    import llguidance as llg

    with _gateway(qwen_like, CALL_TEXT) as gw:
        out = gw.client().chat.completions.create(
            model=MODEL_ID, messages=USER, tools=[WEATHER_TOOL], tool_choice=choice
        )
        spec = gw.backend.requests[-1].sampling.grammar
    assert out.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert spec is not None and spec.kind == "lark"
    tok = llg.LLTokenizer(qwen_like.backend.to_str(), n_vocab=qwen_like.vocab_size)
    for text, fits in [
        (CALL_TEXT, True),
        (CALL_TEXT.replace("get_weather", "get_time"), False),
        (CALL_TEXT.replace('"city"', '"town"'), False),
        (CALL_TEXT.removeprefix("<tool_call>\n"), False),
    ]:
        m = llg.LLMatcher(tok, spec.engine_grammar(), log_level=0)
        ok = m.consume_tokens(qwen_like.encode(text))
        assert (ok and m.is_accepting()) is fits, text


def test_a_tool_message_needs_its_call_id_and_arguments_must_be_json(qwen_like):
    bad_args = {
        "role": "assistant",
        "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
        ],
    }
    with _gateway(qwen_like, CALL_TEXT) as gw:
        client = gw.client()
        for history, needle in (
            ([*USER, {"role": "tool", "content": "21"}], "tool_call_id"),
            ([*USER, bad_args], "not valid JSON"),
        ):
            with pytest.raises(openai.BadRequestError, match=needle):
                client.chat.completions.create(model=MODEL_ID, messages=history)


@pytest.mark.parametrize(
    ("choice", "parallel", "many"),
    [
        ("required", None, True),  # OpenAI's default: parallel calls allowed
        ("required", True, True),
        ("required", False, False),
        ({"type": "function", "function": {"name": "get_weather"}}, None, False),
    ],
)
def test_required_tool_calls_may_be_several_unless_parallel_calls_are_off(
    qwen_like, choice, parallel, many
):
    import llguidance as llg

    two = f"{CALL_TEXT}\n{CALL_TEXT.replace('Paris', 'Zürich')}"
    extra = {} if parallel is None else {"parallel_tool_calls": parallel}
    with _gateway(qwen_like, two if many else CALL_TEXT) as gw:
        out = gw.client().chat.completions.create(
            model=MODEL_ID, messages=USER, tools=[WEATHER_TOOL], tool_choice=choice, **extra
        )
        spec = gw.backend.requests[-1].sampling.grammar
    calls = out.choices[0].message.tool_calls
    assert [json.loads(c.function.arguments)["city"] for c in calls] == (
        ["Paris", "Zürich"] if many else ["Paris"]
    )
    tok = llg.LLTokenizer(qwen_like.backend.to_str(), n_vocab=qwen_like.vocab_size)
    for text, fits in [(CALL_TEXT, True), (two, many), (two + "\n", False)]:
        m = llg.LLMatcher(tok, spec.engine_grammar(), log_level=0)
        ok = m.consume_tokens(qwen_like.encode(text))
        assert (ok and m.is_accepting()) is fits, text
