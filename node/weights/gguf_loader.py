"""Read a shard's tensors from a GGUF file as torch tensors under Hugging Face names.

Tensors are dequantized one at a time from the file's memory map, and only
those the shard wants, so a node holding half the layers pays half the memory.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf.quants import dequantize
from tqdm import tqdm

from parallax.errors import ModelFormatError
from parallax.models.gguf_file import GgufFile, TensorInfo, read_gguf
from parallax.models.spec import ModelSpec

_BLOCK = re.compile(r"^blk\.(\d+)\.(\w+)\.(weight|bias)$")
_LAYER_PARTS = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_q_norm": "self_attn.q_norm",  # Qwen3
    "attn_k_norm": "self_attn.k_norm",
}
_GLOBAL = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
# Present in some files but not a Hugging Face parameter: `rope_freqs` is
# read into ModelSpec.rope_scaling instead.
_IGNORED = {"rope_freqs.weight"}


def hf_name(gguf_name: str) -> str | None:
    """The Hugging Face name of a llama/qwen2/qwen3 GGUF tensor, or None if it has none."""
    if gguf_name in _GLOBAL:
        return _GLOBAL[gguf_name]
    m = _BLOCK.match(gguf_name)
    if m and m.group(2) in _LAYER_PARTS:
        return f"model.layers.{m.group(1)}.{_LAYER_PARTS[m.group(2)]}.{m.group(3)}"
    return None


def unpermute_rope_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp's `permute(w, n_head, n_head_kv)` in convert_hf_to_gguf.

    The converter reorders each head's rows from HF's half-split rotary layout
    ([x0..x_{d/2-1}, x_{d/2}..]) to interleaved pairs for ggml's rope; HF-style
    `rotate_half` needs them back.
    """
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise ModelFormatError(
            f"q/k projection with {rows} rows does not split into {n_head} heads"
        )
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def load_gguf_tensors(
    path: str | Path,
    spec: ModelSpec,
    wanted: Callable[[str], bool],
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    convert: Callable[[str, torch.Tensor], Any] | None = None,
) -> dict[str, Any]:
    """HF name -> tensor for every tensor of the file for which `wanted(hf_name)` holds.

    `convert(name, fp32 tensor)` replaces the cast to `dtype` (e.g. to quantize each
    tensor as it is read, so the float copy of only one tensor is alive at a time).

    A tied model has no `output.weight`; `lm_head.weight` is then served from
    the embedding (the same tensor object when both are wanted).
    """
    gf = read_gguf(path)
    plan: dict[str, TensorInfo] = {}
    for gname, info in gf.tensors.items():
        name = hf_name(gname)
        if name is None:
            if gname in _IGNORED:
                continue
            raise ModelFormatError(
                f"{gf.path} holds tensor {gname!r}, which a {gf.architecture} model does not have"
            )
        if wanted(name):
            plan[name] = info
    tie_head = "lm_head.weight" not in plan and "output.weight" not in gf.tensors
    if tie_head and wanted("lm_head.weight"):
        plan.setdefault("model.embed_tokens.weight", gf.tensors["token_embd.weight"])

    out: dict[str, torch.Tensor] = {}
    bar = tqdm(
        total=len(plan), desc="loading GGUF", unit="tensor", file=sys.stderr, disable=not progress
    )
    try:
        for name, info in plan.items():
            t = _load_one(gf, info, name, spec)
            out[name] = convert(name, t) if convert else t.to(dtype)
            bar.update(1)
    finally:
        bar.close()
    if tie_head and wanted("lm_head.weight"):
        out["lm_head.weight"] = out["model.embed_tokens.weight"]
        if not wanted("model.embed_tokens.weight"):
            del out["model.embed_tokens.weight"]
    return out


def _load_one(gf: GgufFile, info: TensorInfo, name: str, spec: ModelSpec) -> torch.Tensor:
    try:
        w = dequantize(gf.tensor_bytes(info), info.ggml_type)
    except (ValueError, NotImplementedError, OSError) as e:
        raise ModelFormatError(
            f"{gf.path}: cannot dequantize tensor {info.name!r} ({info.ggml_type.name}): {e}"
        ) from e
    w = w.reshape(info.shape)
    # llama.cpp's converter permutes q/k rows for the llama architecture only.
    permuted = spec.family == "llama"
    if permuted and name.endswith("q_proj.weight"):
        w = unpermute_rope_rows(w, spec.num_attention_heads)
    elif permuted and name.endswith("k_proj.weight"):
        w = unpermute_rope_rows(w, spec.num_key_value_heads)
    w = np.ascontiguousarray(w, dtype=np.float32)
    if not w.flags.writeable:  # F32 "dequantization" is a view of the read-only map
        w = w.copy()
    return torch.from_numpy(w)
