"""Text completions: text, several texts and token-id prompts; legacy logprobs."""

from __future__ import annotations

import openai
import pytest

from tests.support.gateway import (
    MODEL_ID,
    SCRIPT_TEXT,
)


def test_text_prompt(gateway, tokenizer):
    out = gateway.client().completions.create(model=MODEL_ID, prompt="Once upon a time")
    assert out.object == "text_completion"
    assert out.id.startswith("cmpl-")
    assert out.choices[0].text == SCRIPT_TEXT
    assert out.choices[0].finish_reason == "stop"
    (req,) = gateway.backend.requests
    assert list(req.prompt_ids) == tokenizer.encode("Once upon a time")
    assert out.usage.prompt_tokens == len(req.prompt_ids)


def test_several_prompts_times_n_give_one_choice_each(gateway, tokenizer):
    out = gateway.client().completions.create(
        model=MODEL_ID, prompt=["One", "Two three"], n=2, max_tokens=2
    )
    assert [c.index for c in out.choices] == [0, 1, 2, 3]
    prompts = [list(r.prompt_ids) for r in gateway.backend.requests]
    assert sorted(prompts) == sorted(2 * [tokenizer.encode("One"), tokenizer.encode("Two three")])
    # Each prompt counts once in usage, however many choices it has.
    assert out.usage.prompt_tokens == len(tokenizer.encode("One")) + len(
        tokenizer.encode("Two three")
    )
    assert out.usage.completion_tokens == 8
    assert all(c.finish_reason == "length" for c in out.choices)


@pytest.mark.parametrize("prompt", [[5, 6, 7], [[5, 6, 7], [8, 9]]])
def test_token_id_prompts(gateway, prompt):
    out = gateway.client().completions.create(model=MODEL_ID, prompt=prompt)
    expected = prompt if isinstance(prompt[0], list) else [prompt]
    assert [list(r.prompt_ids) for r in gateway.backend.requests] == expected
    assert all(c.text == SCRIPT_TEXT for c in out.choices)


def test_token_ids_outside_the_vocabulary_are_rejected(gateway, tokenizer):
    with pytest.raises(openai.BadRequestError) as err:
        gateway.client().completions.create(model=MODEL_ID, prompt=[1, tokenizer.vocab_size])
    assert err.value.body["param"] == "prompt"
    assert gateway.backend.requests == []


def test_stream_with_usage(gateway):
    chunks = list(
        gateway.client().completions.create(
            model=MODEL_ID, prompt="Hi", stream=True, stream_options={"include_usage": True}
        )
    )
    *body, finish, usage = chunks
    assert "".join(c.choices[0].text for c in body) == SCRIPT_TEXT
    assert finish.choices[0].finish_reason == "stop" and finish.choices[0].text == ""
    assert usage.choices == [] and usage.usage.total_tokens > 0


def test_legacy_logprobs(gateway):
    out = gateway.client().completions.create(model=MODEL_ID, prompt="Hi", logprobs=2, max_tokens=5)
    lp = out.choices[0].logprobs
    assert gateway.backend.requests[0].sampling.logprobs == 2
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5
    assert lp.token_logprobs[:2] == [-0.25, -0.5]
    assert all(len(top) == 2 for top in lp.top_logprobs)
    assert lp.text_offset[0] == 0
    assert lp.text_offset == sorted(lp.text_offset)
    assert lp.text_offset[1] == len(lp.tokens[0])


def test_echo_and_suffix_are_rejected_by_name(gateway):
    for extra in ({"echo": True}, {"suffix": "tail"}, {"best_of": 3}):
        with pytest.raises(openai.BadRequestError) as err:
            gateway.client().completions.create(model=MODEL_ID, prompt="Hi", **extra)
        (name,) = extra
        assert err.value.body["param"] == name
        assert name in err.value.message
