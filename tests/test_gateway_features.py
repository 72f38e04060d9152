"""Stop strings, n > 1 and logprobs, end to end through the official client."""

from __future__ import annotations

import pytest

from tests.support.gateway import (
    MODEL_ID,
    SCRIPT_TEXT,
    ScriptedBackend,
    running_gateway,
)

USER = [{"role": "user", "content": "Say hello."}]


def _stream_text(chunks, index: int = 0) -> str:
    return "".join(
        c.choices[0].delta.content or ""
        for c in chunks
        if c.choices and c.choices[0].index == index
    )


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        ("日本", "Hello, café — "),  # starts inside a multi-token character
        ("é —", "Hello, caf"),  # spans two tokens
        (["🙂", "café"], "Hello, "),  # the earliest of several wins
        ("Hello", ""),
    ],
)
def test_stop_string_truncates_and_aborts_upstream(tokenizer, stop, expected):
    # The backend never finishes by itself: only the gateway's abort ends the request.
    backend = ScriptedBackend(tokenizer, hang_after_script=True)
    with running_gateway(tokenizer, backend) as gw:
        out = gw.client().chat.completions.create(model=MODEL_ID, messages=USER, stop=stop)
        assert backend.closed_event.wait(5)
    assert out.choices[0].message.content == expected
    assert out.choices[0].finish_reason == "stop"
    (req,) = backend.requests
    assert backend.closed_early == {req.request_id}


def test_streamed_text_never_shows_part_of_a_stop_string(gateway):
    chunks = list(
        gateway.client().chat.completions.create(
            model=MODEL_ID, messages=USER, stop="é —", stream=True
        )
    )
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert "".join(pieces) == "Hello, caf"
    assert not any("é" in p for p in pieces)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_possible_stop_prefix_is_released_once_it_diverges(gateway):
    for stream in (False, True):
        out = gateway.client().chat.completions.create(
            model=MODEL_ID, messages=USER, stop=["done!", "café!"], stream=stream
        )
        text = _stream_text(out) if stream else out.choices[0].message.content
        assert text == SCRIPT_TEXT


def test_n2_derives_a_seed_per_choice_reproducibly(gateway):
    client = gateway.client()
    for _ in range(2):
        out = client.chat.completions.create(
            model=MODEL_ID, messages=USER, n=2, seed=1234, temperature=0.8
        )
        assert [c.index for c in out.choices] == [0, 1]
        assert all(c.message.content == SCRIPT_TEXT for c in out.choices)
    seeds = [r.sampling.seed for r in gateway.backend.requests]
    assert seeds[0] == 1234  # choice 0 of n=2 is the n=1 request with that seed
    assert seeds[0] != seeds[1]
    assert seeds[:2] == seeds[2:]
    assert len({r.request_id for r in gateway.backend.requests}) == 4
    per_choice = len(gateway.backend.tokens_for(gateway.backend.requests[0]))
    assert out.usage.completion_tokens == 2 * per_choice
    assert out.usage.prompt_tokens == len(gateway.backend.requests[0].prompt_ids)


def test_n2_streams_both_choices(gateway):
    chunks = list(
        gateway.client().chat.completions.create(
            model=MODEL_ID, messages=USER, n=2, stream=True, stream_options={"include_usage": True}
        )
    )
    for index in (0, 1):
        mine = [c for c in chunks if c.choices and c.choices[0].index == index]
        assert mine[0].choices[0].delta.role == "assistant"
        assert mine[-1].choices[0].finish_reason == "stop"
        assert _stream_text(chunks, index) == SCRIPT_TEXT
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_chat_logprobs_have_the_openai_shape(gateway):
    out = gateway.client().chat.completions.create(
        model=MODEL_ID, messages=USER, logprobs=True, top_logprobs=2
    )
    assert gateway.backend.requests[0].sampling.logprobs == 2
    content = out.choices[0].logprobs.content
    # One entry per visible token: the EOS that ended generation is not reported.
    assert len(content) == out.usage.completion_tokens - 1
    assert b"".join(bytes(e.bytes) for e in content) == SCRIPT_TEXT.encode()
    assert content[0].token == "Hello" and content[0].logprob == -0.25
    assert any(e.token.startswith("bytes:") for e in content)  # a partial character
    assert all(len(e.top_logprobs) == 2 for e in content)
    assert content[0].top_logprobs[1].logprob == -1.25

    streamed = list(
        gateway.client().chat.completions.create(
            model=MODEL_ID, messages=USER, logprobs=True, top_logprobs=2, stream=True
        )
    )
    entries = [e for c in streamed if c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [(e.token, e.logprob) for e in entries] == [(e.token, e.logprob) for e in content]


def test_logprobs_off_by_default(gateway):
    out = gateway.client().chat.completions.create(model=MODEL_ID, messages=USER)
    assert out.choices[0].logprobs is None
    assert gateway.backend.requests[0].sampling.logprobs == -1


def test_logprobs_after_a_stop_string_are_not_reported(gateway):
    out = gateway.client().chat.completions.create(
        model=MODEL_ID, messages=USER, logprobs=True, stop=" —"
    )
    assert out.choices[0].message.content == "Hello, café"
    # " —" spelled the stop string: a token is reported only if some of its text went out.
    assert [e.token for e in out.choices[0].logprobs.content] == ["Hello", ",", " café"]
