"""End-to-end: a 6,000-token prompt on 3 SmolLM2 nodes at --max-model-len 8192 gives the
local engine's greedy tokens (the context was a fixed 2,048 tokens before)."""

from __future__ import annotations

import itertools

import httpx
import pytest

from parallax.models.registry import resolve_model
from parallax.sampling import SamplingParams
from parallax.tokenizer import Tokenizer
from tests.support.cluster import Cluster
from tests.support.engine import local_engine

pytestmark = pytest.mark.e2e

PROMPT_TOKENS = 6000
NEW_TOKENS = 8
COLOURS = ("red", "green", "blue", "amber", "violet", "grey", "white")
ANIMALS = ("fox", "heron", "otter", "lynx", "crow", "badger", "hare", "seal", "wren")


def long_prompt(tok: Tokenizer) -> list[int]:
    """A log of varied lines, cut at exactly PROMPT_TOKENS tokens."""
    lines = (
        f"Entry {i}: the {c} {a} crossed bridge {i * 7 % 113} at {i % 24:02d}:{i * 13 % 60:02d}.\n"
        for i, (c, a) in enumerate(itertools.product(COLOURS * 20, ANIMALS))
    )
    ids = tok.encode("".join(lines))
    assert len(ids) >= PROMPT_TOKENS
    return ids[: PROMPT_TOKENS - 6] + tok.encode("\nEntry 0 was the")


def test_6000_token_prompt_on_three_nodes_equals_local_engine():
    resolved = resolve_model("smollm2-135m")
    tok = Tokenizer.from_model(resolved)
    prompt = long_prompt(tok)
    assert len(prompt) > 5900
    engine = local_engine(resolved.path, eos_ids=(), kv_cache_mb=512)
    want = engine.generate([prompt], SamplingParams(max_tokens=NEW_TOKENS, ignore_eos=True))[0]
    del engine
    with Cluster(
        "smollm2-135m",
        nodes=3,
        min_stages=3,
        node_args=("--kv-cache-mb", "256"),
        coordinator_args=("--max-model-len", "8192"),
    ) as cluster:
        card = httpx.get(f"{cluster.http_url}/v1/models", timeout=5).json()["data"][0]
        assert card["max_model_len"] == 8192
        body = {
            "model": "smollm2-135m",
            "prompt": prompt,
            "max_tokens": NEW_TOKENS,
            "temperature": 0,
            "ignore_eos": True,
        }
        r = httpx.post(f"{cluster.http_url}/v1/completions", json=body, timeout=600)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == len(prompt)
    assert r.json()["choices"][0]["text"] == tok.decode(want)
