"""Write a tiny Hugging Face Qwen2/Qwen3 folder as a GGUF, the way llama.cpp's converter does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.quants import quantize
from safetensors.numpy import load_file

_GLOBAL = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_PARTS = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def gguf_name(hf: str) -> str:
    if hf in _GLOBAL:
        return _GLOBAL[hf]
    i, rest = hf[len("model.layers.") :].split(".", 1)
    part, kind = rest.rsplit(".", 1)
    return f"blk.{i}.{_PARTS[part]}.{kind}"


def write_qwen_gguf(
    folder: Path, dst: Path, qtype: GGMLQuantizationType = GGMLQuantizationType.F32
) -> Path:
    """`folder`'s config and weights as a `qwen2`/`qwen3` GGUF; q/k stay unpermuted,
    as llama.cpp writes them for these architectures."""
    cfg = json.loads((folder / "config.json").read_text())
    arch = cfg["model_type"]
    heads = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    w = GGUFWriter(str(dst), arch)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_freq_base(float(cfg.get("rope_theta") or cfg["rope_parameters"]["rope_theta"]))
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_vocab_size(cfg["vocab_size"])
    w.add_eos_token_id(cfg["eos_token_id"])
    for name, t in load_file(str(folder / "model.safetensors")).items():
        t = t.astype(np.float32)
        if t.ndim == 1 or qtype == GGMLQuantizationType.F32:  # norms and biases stay F32
            w.add_tensor(gguf_name(name), t)
        else:
            w.add_tensor(gguf_name(name), quantize(t, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst
