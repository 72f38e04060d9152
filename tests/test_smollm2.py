"""The built-in SmolLM2 GGUF: greedy parity with transformers, and memory follows the shard."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from parallax.models.registry import resolve_model
from parallax.sampling import SamplingParams
from parallax.tokenizer import Tokenizer
from tests.support.engine import local_engine

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Write a haiku about the sea."},
    ],
    [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Explain gravity to a child in two sentences."},
    ],
]


@pytest.fixture(scope="module")
def reference(smollm2_path):
    import transformers as tf

    return tf.AutoModelForCausalLM.from_pretrained(
        str(smollm2_path.parent), gguf_file=smollm2_path.name, dtype=torch.float32
    ).eval()


def test_32_greedy_tokens_match_transformers_on_the_gguf(smollm2_path, reference):
    tok = Tokenizer.from_model(resolve_model("smollm2-135m"))
    eng = local_engine("smollm2-135m", eos_ids=())  # run all 32 steps, past any EOS
    prompts = [tok.encode_chat(c) for c in CHATS]
    ours = eng.generate(prompts, SamplingParams(max_tokens=32))
    for prompt, got in zip(prompts, ours, strict=True):
        # A plain greedy loop: generate() would ban EOS under min_new_tokens.
        want, feed, past = [], torch.tensor([prompt]), None
        with torch.no_grad():
            for _ in range(32):
                out = reference(feed, past_key_values=past, use_cache=True)
                past = out.past_key_values
                nxt = int(out.logits[0, -1].argmax())
                want.append(nxt)
                feed = torch.tensor([[nxt]])
        assert got == want, tok.decode(got) + " != " + tok.decode(want)


# VmHWM (not ru_maxrss): ru_maxrss survives exec, so a child would inherit pytest's peak.
PEAK_RSS = """
import json, sys
import torch
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
from node.weights import load_shard_model
from parallax.models.registry import resolve_model
from parallax.types import LayerRange
r = resolve_model("smollm2-135m")
base = hwm()
model = load_shard_model(r, LayerRange(int(sys.argv[1]), int(sys.argv[2])), progress=False)
peak = hwm()
print(json.dumps({"base_kib": base, "peak_kib": peak}))
"""


def peak_growth_mib(start: int, end: int) -> float:
    out = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, str(start), str(end)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return (r["peak_kib"] - r["base_kib"]) / 1024


def test_half_shard_peak_memory_is_well_under_the_whole_model():
    whole = peak_growth_mib(0, 30)
    middle_half = peak_growth_mib(8, 23)
    assert whole > 300  # fp32 SmolLM2 is about 540 MB of weights
    assert middle_half < 0.6 * whole, (middle_half, whole)
