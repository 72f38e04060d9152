"""GGUF reading: ModelSpec from metadata, tensors under HF names, and clear errors on bad files."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType
from hypothesis import given, settings
from hypothesis import strategies as st

from node.weights.gguf_loader import load_gguf_tensors, unpermute_rope_rows
from parallax.errors import ModelFormatError
from parallax.models.gguf_meta import llama3_rope_factors, spec_from_gguf
from parallax.models.spec import RopeScaling
from tests.support.gguf_files import (
    TINY_CFG,
    gguf_magic_then_garbage,
    llama_cpp_permute,
    random_file,
    smollm2_path,
    tiny_hf_state,
    truncated_copy,
    write_tiny_llama_gguf,
)

_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


def layers_below(n: int):
    return lambda name: (m := _LAYER.match(name)) is not None and int(m.group(1)) < n


@pytest.fixture(scope="module")
def spec():
    return spec_from_gguf(smollm2_path())


@pytest.fixture(scope="module")
def hf_reference():
    """transformers' own GGUF loading of the whole model: the reference, loaded once."""
    transformers = pytest.importorskip("transformers")
    path = smollm2_path()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    return model.state_dict()


def test_smollm2_spec(spec):
    assert spec.family == "llama"
    assert (spec.num_layers, spec.hidden_size, spec.intermediate_size) == (30, 576, 1536)
    assert (spec.num_attention_heads, spec.num_key_value_heads, spec.head_dim) == (9, 3, 64)
    assert spec.vocab_size == 49152
    assert spec.tie_word_embeddings is True
    assert spec.rope_theta == 100000.0 and spec.rope_scaling is None
    assert spec.rms_norm_eps == pytest.approx(1e-5) and spec.max_position_embeddings == 8192
    assert spec.bos_token_id == 1 and spec.eos_token_ids == (2,)


def test_tensors_match_transformers_gguf_loading(spec, hf_reference):
    picked = {0, 1, 29}

    def wanted(name: str) -> bool:
        m = _LAYER.match(name)
        return int(m.group(1)) in picked if m else True

    mine = load_gguf_tensors(smollm2_path(), spec, wanted, progress=False)
    expected = {k for k in hf_reference if wanted(k)}
    assert set(mine) == expected
    assert "lm_head.weight" in mine and "model.layers.1.self_attn.q_proj.weight" in mine
    for name in sorted(expected):
        ref = hf_reference[name]
        assert mine[name].shape == ref.shape, name
        assert mine[name].dtype == torch.float32
        assert torch.equal(mine[name], ref), name


def test_half_shard_reads_only_its_layers(spec):
    got = load_gguf_tensors(smollm2_path(), spec, layers_below(5), progress=False)
    assert len(got) == 5 * 9
    assert {int(_LAYER.match(n).group(1)) for n in got} == set(range(5))
    q = got["model.layers.0.self_attn.q_proj.weight"]
    k = got["model.layers.0.self_attn.k_proj.weight"]
    assert q.shape == (576, 576) and k.shape == (192, 576)
    assert got["model.layers.4.mlp.down_proj.weight"].shape == (576, 1536)


def test_tied_head_is_served_from_the_embedding(spec):
    head_only = load_gguf_tensors(
        smollm2_path(), spec, lambda n: n == "lm_head.weight", progress=False
    )
    assert set(head_only) == {"lm_head.weight"}
    both = load_gguf_tensors(
        smollm2_path(),
        spec,
        lambda n: n in ("lm_head.weight", "model.embed_tokens.weight"),
        dtype=torch.bfloat16,
        progress=False,
    )
    assert both["lm_head.weight"] is both["model.embed_tokens.weight"]
    assert both["lm_head.weight"].dtype == torch.bfloat16
    assert torch.equal(
        both["lm_head.weight"].float(), head_only["lm_head.weight"].bfloat16().float()
    )


def test_progress_bar_goes_to_stderr(spec, capsys):
    load_gguf_tensors(smollm2_path(), spec, lambda n: n == "model.norm.weight", progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "loading GGUF" in err


@pytest.mark.parametrize(
    "qtype,tol",
    [
        (GGMLQuantizationType.F32, 0.0),
        (GGMLQuantizationType.F16, 1e-2),
        (GGMLQuantizationType.BF16, 5e-2),
        (GGMLQuantizationType.Q8_0, 5e-2),
        (GGMLQuantizationType.Q4_0, 0.6),
        (GGMLQuantizationType.Q4_1, 0.6),
    ],
)
def test_round_trip_through_llama_cpp_layout(tmp_path, qtype, tol):
    """HF weights -> GGUF as llama.cpp writes it -> our loader gives the HF weights back."""
    state = tiny_hf_state(seed=1)
    path = write_tiny_llama_gguf(tmp_path / "tiny.gguf", state, qtype)
    spec = spec_from_gguf(path)
    assert spec.tie_word_embeddings is False and spec.num_key_value_heads == TINY_CFG["kv_heads"]
    got = load_gguf_tensors(path, spec, lambda n: True, progress=False)
    assert set(got) == set(state)
    for name, ref in state.items():
        diff = np.abs(got[name].numpy() - ref).max()
        assert diff <= tol, (name, diff)


@settings(max_examples=50, deadline=None)
@given(
    n_head=st.integers(1, 8),
    half_dim=st.integers(1, 8),
    cols=st.integers(1, 5),
)
def test_unpermute_inverts_the_converter_permutation(n_head, half_dim, cols):
    w = np.arange(n_head * 2 * half_dim * cols, dtype=np.float32).reshape(-1, cols)
    assert np.array_equal(unpermute_rope_rows(llama_cpp_permute(w, n_head), n_head), w)


def test_truncated_and_random_files_raise_format_errors(tmp_path, spec):
    size = smollm2_path().stat().st_size
    for keep in (0, 3, 20, 5000, 1_000_000, size - 1000):
        p = truncated_copy(tmp_path / f"cut{keep}.gguf", keep)
        with pytest.raises(ModelFormatError):
            spec_from_gguf(p)
        with pytest.raises(ModelFormatError):
            load_gguf_tensors(p, spec, lambda n: True, progress=False)
    with pytest.raises(ModelFormatError, match="not a GGUF file"):
        spec_from_gguf(random_file(tmp_path / "random.gguf"))
    for i in range(20):
        with pytest.raises(ModelFormatError):
            spec_from_gguf(gguf_magic_then_garbage(tmp_path / f"garbage{i}.gguf"))


def test_unsupported_architecture_is_named(tmp_path):
    path = write_tiny_llama_gguf(tmp_path / "gpt2.gguf", tiny_hf_state(), arch="gpt2")
    with pytest.raises(ModelFormatError, match="'gpt2'.*llama"):
        spec_from_gguf(path)


def test_llama3_rope_factors_are_recognised_and_odd_ones_refused(tmp_path):
    head_dim = TINY_CFG["hidden"] // TINY_CFG["heads"]
    scaling = RopeScaling(
        factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192
    )
    factors = llama3_rope_factors(scaling, head_dim, 10000.0)
    assert factors.min() == 1.0 and factors.max() == 8.0  # the tiny dims span all three bands
    good = write_tiny_llama_gguf(
        tmp_path / "l3.gguf", tiny_hf_state(), extra={"rope_freqs.weight": factors}
    )
    spec = spec_from_gguf(good)
    assert spec.rope_scaling == scaling
    got = load_gguf_tensors(good, spec, lambda n: True, progress=False)
    assert not any("rope" in n for n in got)
    odd = write_tiny_llama_gguf(
        tmp_path / "odd.gguf", tiny_hf_state(), extra={"rope_freqs.weight": factors[::-1].copy()}
    )
    with pytest.raises(ModelFormatError, match="rope"):
        spec_from_gguf(odd)
