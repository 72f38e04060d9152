"""Chat completions through the official openai client against a real uvicorn server."""

from __future__ import annotations

from tests.support.gateway import (
    MODEL_ID,
    SCRIPT_TEXT,
    TEST_CONTEXT,
)

USER = [{"role": "user", "content": "Say hello."}]


def test_non_streaming_chat_has_the_openai_shape(gateway, tokenizer):
    out = gateway.client().chat.completions.create(model=MODEL_ID, messages=USER)
    assert out.object == "chat.completion"
    assert out.id.startswith("chatcmpl-")
    assert out.model == MODEL_ID
    assert out.system_fingerprint
    (choice,) = out.choices
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content == SCRIPT_TEXT
    assert choice.finish_reason == "stop"
    assert choice.logprobs is None
    (req,) = gateway.backend.requests
    assert list(req.prompt_ids) == tokenizer.encode_chat(USER)
    assert out.usage.prompt_tokens == len(req.prompt_ids)
    # The script plus the EOS that ended it
    assert out.usage.completion_tokens == len(tokenizer.encode(SCRIPT_TEXT)) + 1
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_max_tokens_cuts_with_length_and_defaults_to_the_rest_of_the_context(gateway, tokenizer):
    client = gateway.client()
    out = client.chat.completions.create(model=MODEL_ID, messages=USER, max_tokens=3)
    assert out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 3
    assert out.choices[0].message.content == tokenizer.decode(tokenizer.encode(SCRIPT_TEXT)[:3])
    client.chat.completions.create(model=MODEL_ID, messages=USER, max_completion_tokens=4)
    client.chat.completions.create(model=MODEL_ID, messages=USER)
    asked = [r.sampling.max_tokens for r in gateway.backend.requests]
    assert asked == [3, 4, TEST_CONTEXT - len(gateway.backend.requests[2].prompt_ids)]


def test_sampling_parameters_reach_the_backend(gateway):
    gateway.client().chat.completions.create(
        model=MODEL_ID,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        ],
        temperature=0.7,
        top_p=0.9,
        seed=42,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        logit_bias={"7": 2.5},
        user="someone",
        extra_body={
            "top_k": 40,
            "min_p": 0.05,
            "repetition_penalty": 1.1,
            "ignore_eos": True,
            "min_tokens": 2,
        },
    )
    s = gateway.backend.requests[0].sampling
    assert (s.temperature, s.top_p, s.top_k, s.min_p, s.seed) == (0.7, 0.9, 40, 0.05, 42)
    assert (s.presence_penalty, s.frequency_penalty, s.repetition_penalty) == (0.5, -0.5, 1.1)
    assert s.ignore_eos and s.min_tokens == 2
    assert dict(s.logit_bias) == {7: 2.5}
    assert s.logprobs == -1


def test_temperature_defaults_to_openais_one(gateway):
    gateway.client().chat.completions.create(model=MODEL_ID, messages=USER)
    assert gateway.backend.requests[0].sampling.temperature == 1.0


def test_stream_sends_role_then_content_then_finish_then_usage(gateway):
    stream = gateway.client().chat.completions.create(
        model=MODEL_ID, messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    first, *middle, finish, usage = chunks
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.content == ""
    assert all(c.choices[0].finish_reason is None for c in middle)
    assert all(c.usage is None for c in [first, *middle, finish])
    assert "".join(c.choices[0].delta.content for c in middle) == SCRIPT_TEXT
    assert finish.choices[0].finish_reason == "stop"
    assert not finish.choices[0].delta.content
    assert usage.choices == []
    (req,) = gateway.backend.requests
    assert usage.usage.completion_tokens == len(gateway.backend.tokens_for(req))
    assert usage.usage.prompt_tokens == len(req.prompt_ids)


def test_stream_never_splits_a_utf8_character(gateway, tokenizer):
    ids = tokenizer.encode(SCRIPT_TEXT)
    # The script really spreads characters over several tokens, or this test proves nothing.
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)
    stream = gateway.client().chat.completions.create(model=MODEL_ID, messages=USER, stream=True)
    pieces = [c.choices[0].delta.content for c in stream if c.choices[0].delta.content]
    assert "".join(pieces) == SCRIPT_TEXT
    assert not any("\ufffd" in p for p in pieces)
    assert "語" in pieces or any("語" in p for p in pieces)


def test_stream_without_include_usage_has_no_usage_chunk(gateway):
    chunks = list(
        gateway.client().chat.completions.create(model=MODEL_ID, messages=USER, stream=True)
    )
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices for c in chunks)
