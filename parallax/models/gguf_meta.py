"""GGUF metadata -> `ModelSpec` (torch-free: the scheduler and gateway read it too)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType

from parallax.errors import ModelFormatError
from parallax.models.gguf_file import GgufFile, read_gguf
from parallax.models.spec import ModelSpec, RopeScaling

# llama.cpp writes Mistral checkpoints as "llama"; both share one module layout.
# Qwen2 adds q/k/v biases, Qwen3 per-head q/k RMSNorms; neither is permuted.
SUPPORTED_GGUF_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3")

# llama.cpp bakes Llama-3 rope scaling into a `rope_freqs` tensor and drops the
# parameters; these are the ones every Llama 3.x release uses, and we verify the
# tensor against them rather than trust them blindly.
_LLAMA3_LOW_FREQ_FACTOR = 1.0
_LLAMA3_HIGH_FREQ_FACTOR = 4.0
_LLAMA3_ORIGINAL_CONTEXT = 8192


def spec_from_gguf(path: str | Path) -> ModelSpec:
    """Read a GGUF header and describe the model. Raises `ModelFormatError` for
    corrupt files and architectures the engine does not implement."""
    return spec_from_header(read_gguf(path))


def spec_from_header(gf: GgufFile) -> ModelSpec:
    arch = gf.architecture
    if arch not in SUPPORTED_GGUF_ARCHITECTURES:
        raise ModelFormatError(
            f"{gf.path} holds a {arch or 'unnamed'!r} model; GGUF files of architecture "
            f"{', '.join(SUPPORTED_GGUF_ARCHITECTURES)} are supported. "
            "Use a Hugging Face folder for other families."
        )
    md = gf.metadata

    def get(key: str, default: Any = None, required: bool = False) -> Any:
        full = f"{arch}.{key}"
        if full not in md:
            if required:
                raise ModelFormatError(f"{gf.path} lacks the GGUF metadata key {full!r}")
            return default
        value = md[full]
        if isinstance(value, list):
            if len(set(value)) != 1:
                raise ModelFormatError(f"{gf.path}: per-layer {full!r} values are not supported")
            value = value[0]
        return value

    num_layers = int(get("block_count", required=True))
    hidden = int(get("embedding_length", required=True))
    heads = int(get("attention.head_count", required=True))
    kv_heads = int(get("attention.head_count_kv", heads))
    theta = float(get("rope.freq_base", 10000.0))
    head_dim = int(get("attention.key_length", 0) or (hidden // heads if heads else 0))
    _require_tensors(gf, num_layers)
    eos = md.get("tokenizer.ggml.eos_token_id")
    bos = md.get("tokenizer.ggml.bos_token_id")
    return ModelSpec(
        family=arch if arch in ("qwen2", "qwen3") else "llama",
        num_layers=num_layers,
        hidden_size=hidden,
        intermediate_size=int(get("feed_forward_length", required=True)),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=_vocab_size(gf, get("vocab_size")),
        rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=theta,
        rope_scaling=_rope_scaling(gf, get("rope.scaling.type"), head_dim, theta),
        max_position_embeddings=int(get("context_length", 2048)),
        tie_word_embeddings="output.weight" not in gf.tensors,
        attention_bias="blk.0.attn_q.bias" in gf.tensors,
        qk_norm="blk.0.attn_q_norm.weight" in gf.tensors,
        torch_dtype=_float_dtype(gf),
        bos_token_id=int(bos) if bos is not None else None,
        eos_token_ids=(int(eos),) if eos is not None else (),
    )


def _vocab_size(gf: GgufFile, declared: Any) -> int:
    tokens = gf.metadata.get("tokenizer.ggml.tokens")
    if isinstance(tokens, list | int):  # a count unless the caller kept the strings
        return len(tokens) if isinstance(tokens, list) else tokens
    if declared is not None:
        return int(declared)
    embd = gf.tensors.get("token_embd.weight")
    if embd is None:
        raise ModelFormatError(f"{gf.path} has neither a token list nor token_embd.weight")
    return embd.shape[0]


def _require_tensors(gf: GgufFile, num_layers: int) -> None:
    needed = ["token_embd.weight", "output_norm.weight"]
    needed += [f"blk.{i}.attn_q.weight" for i in (0, num_layers - 1)]
    missing = [n for n in needed if n not in gf.tensors]
    if missing:
        raise ModelFormatError(
            f"{gf.path} lacks tensors {missing}; it is not a complete llama-style checkpoint"
        )


def _float_dtype(gf: GgufFile) -> str:
    kinds = {t.ggml_type for t in gf.tensors.values()}
    if GGMLQuantizationType.BF16 in kinds:
        return "bfloat16"
    if GGMLQuantizationType.F16 in kinds:
        return "float16"
    return "float32"


def _rope_scaling(
    gf: GgufFile, scaling_type: Any, head_dim: int, theta: float
) -> RopeScaling | None:
    if scaling_type not in (None, "none"):
        raise ModelFormatError(
            f"{gf.path} uses {scaling_type!r} rope scaling, which the engine does not implement"
        )
    info = gf.tensors.get("rope_freqs.weight")
    if info is None:
        return None
    if info.ggml_type != GGMLQuantizationType.F32:
        raise ModelFormatError(f"{gf.path}: rope_freqs.weight is not F32; corrupt file")
    stored = np.asarray(gf.tensor_bytes(info)).view(np.float32).reshape(-1)
    candidate = RopeScaling(
        factor=float(stored.max()),
        low_freq_factor=_LLAMA3_LOW_FREQ_FACTOR,
        high_freq_factor=_LLAMA3_HIGH_FREQ_FACTOR,
        original_max_position_embeddings=_LLAMA3_ORIGINAL_CONTEXT,
    )
    expected = llama3_rope_factors(candidate, head_dim, theta)
    if len(expected) != len(stored) or not np.allclose(expected, stored, rtol=1e-4):
        raise ModelFormatError(
            f"{gf.path} has rope frequency factors that are not standard Llama-3 scaling; "
            "load the Hugging Face folder of this model instead"
        )
    return candidate


def llama3_rope_factors(s: RopeScaling, head_dim: int, theta: float) -> np.ndarray:
    """The per-frequency divisors llama.cpp's converter stores as `rope_freqs`."""
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(s.factor)
        else:
            smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
                s.high_freq_factor - s.low_freq_factor
            )
            out.append(1.0 / ((1 - smooth) / s.factor + smooth))
    return np.asarray(out, dtype=np.float32)
