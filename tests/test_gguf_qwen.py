"""Qwen2 and Qwen3 GGUF files: q/k/v biases, per-head q/k norms, no un-permute.

Tiny random Qwen checkpoints are written as GGUF the way llama.cpp does and checked
against transformers' own GGUF loading, greedily and through a two-shard chain.
"""

from __future__ import annotations

import pytest
import torch
from gguf import GGMLQuantizationType
from safetensors.torch import load_file

from node.weights.gguf_loader import load_gguf_tensors
from parallax.models.gguf_meta import spec_from_gguf
from parallax.models.spec import ModelSpec
from tests.support.engine import greedy_pipeline, shard_runners
from tests.support.qwen_gguf import write_qwen_gguf

FAMILIES = ("qwen2", "qwen3")
PROMPT = [5, 17, 99, 200, 3, 42, 7]
STEPS = 12


@pytest.fixture(scope="module")
def ggufs(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen-gguf")
    return {
        (fam, q.name): write_qwen_gguf(tiny_models[fam], root / f"{fam}-{q.name}.gguf", q)
        for fam in FAMILIES
        for q in (GGMLQuantizationType.F32, GGMLQuantizationType.Q8_0)
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_spec_equals_the_hf_config(family, tiny_models, ggufs):
    got = spec_from_gguf(ggufs[(family, "F32")])
    want = ModelSpec.from_hf_dir(tiny_models[family])
    assert got.family == family
    assert got.attention_bias == (family == "qwen2") == want.attention_bias
    assert got.qk_norm == (family == "qwen3") == want.qk_norm
    for field in (
        "num_layers",
        "hidden_size",
        "intermediate_size",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "vocab_size",
        "rms_norm_eps",
        "rope_theta",
        "max_position_embeddings",
        "tie_word_embeddings",
        "eos_token_ids",
    ):
        assert getattr(got, field) == getattr(want, field), field


@pytest.mark.parametrize("family", FAMILIES)
def test_tensors_come_back_exactly_unpermuted(family, tiny_models, ggufs):
    spec = spec_from_gguf(ggufs[(family, "F32")])
    got = load_gguf_tensors(ggufs[(family, "F32")], spec, lambda n: True, progress=False)
    want = load_file(str(tiny_models[family] / "model.safetensors"))
    assert set(got) == set(want)
    extra = ("self_attn.q_proj.bias",) if family == "qwen2" else ("self_attn.q_norm.weight",)
    assert all(f"model.layers.0.{e}" in got for e in extra)
    for name, t in want.items():
        assert torch.equal(got[name], t.float()), name


def _transformers_greedy(family: str, path, tiny_models) -> list[int]:
    transformers = pytest.importorskip("transformers")
    # transformers' GGUF config mapping drops qwen3's attention.key_length (real Qwen3
    # has head_dim 128, its default): give it the config; the weights are the GGUF's.
    config = transformers.AutoConfig.from_pretrained(tiny_models[family])
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent),
        gguf_file=path.name,
        dtype=torch.float32,
        **({"config": config} if family == "qwen3" else {}),
    )
    out = model.generate(
        torch.tensor([PROMPT]), max_new_tokens=STEPS, min_new_tokens=STEPS, do_sample=False
    )
    return out[0, len(PROMPT) :].tolist()


@pytest.mark.parametrize("qtype", ["F32", "Q8_0"])
@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_equals_transformers_gguf(family, qtype, tiny_models, ggufs):
    path = ggufs[(family, qtype)]
    want = _transformers_greedy(family, path, tiny_models)
    got, _ = greedy_pipeline(shard_runners(path, [2]), PROMPT, STEPS)
    assert got == want
