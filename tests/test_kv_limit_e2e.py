"""A cluster whose KV cache is small: a prompt that cannot fit is refused at once with
HTTP 400 context_length_exceeded (it used to wait 30 s for room that never comes and
get 429 "retry shortly", or, just under the limit, hang on the node until the client
timed out), and max_tokens is lowered to what fits (finish_reason "length")."""

from __future__ import annotations

import time

import openai
import pytest

from tests.support.cluster import Cluster

pytestmark = pytest.mark.e2e

MODEL = "smollm2-135m"


def test_prompts_past_the_kv_cache_are_refused_at_once_and_the_rest_fit():
    # One node holding all 30 layers in 8 MiB of KV: about 176 tokens per request.
    with Cluster(MODEL, nodes=1, min_stages=1, node_args=("--kv-cache-mb", "8")) as cluster:
        client = openai.OpenAI(
            api_key="none", base_url=cluster.http_url + "/v1", max_retries=0, timeout=60
        )
        answered, refused = [], []
        for count in range(20, 200, 8):
            words = " ".join(str(i) for i in range(count))
            started = time.monotonic()
            try:
                r = client.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": f"Count: {words}"}],
                    max_tokens=64,
                    temperature=0,
                )
                answered.append((r.usage.prompt_tokens, r.usage.completion_tokens))
                if r.usage.completion_tokens < 64 and r.choices[0].finish_reason == "length":
                    assert r.usage.prompt_tokens + r.usage.completion_tokens <= 176
            except openai.BadRequestError as e:
                assert time.monotonic() - started < 5, "refused, but only after a wait"
                assert e.code == "context_length_exceeded", e.body
                assert "--kv-cache-mb" in str(e)
                refused.append(count)
        assert answered and refused, (answered, refused)
        assert refused == list(range(min(refused), 200, 8)), "refused only past the limit"
        # Lowered to fit: some answer ended early at the cache's end, not at 64 tokens.
        assert any(c < 64 for _, c in answered), answered
        # Without max_tokens too (it defaults to the rest of the context).
        r = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Count: 1 2 3"}], temperature=0
        )
        assert r.usage.prompt_tokens + r.usage.completion_tokens <= 176
