"""Model shapes from public config.json files: names `parallax plan` accepts for a model.

The allocator itself always takes a `ModelSpec`; these only spare callers a download.
"""

from __future__ import annotations

from parallax.errors import InvalidArgument
from parallax.models.spec import ModelSpec

# name -> (layers, hidden, intermediate, heads, kv_heads, vocab, tied)
_SHAPES: dict[str, tuple[int, int, int, int, int, int, bool]] = {
    "smollm2-135m": (30, 576, 1536, 9, 3, 49152, True),
    "smollm2-360m": (32, 960, 2560, 15, 5, 49152, True),
    "llama3-8b": (32, 4096, 14336, 32, 8, 128256, False),
    "llama3-70b": (80, 8192, 28672, 64, 8, 128256, False),
    "qwen2.5-32b": (64, 5120, 27648, 40, 8, 152064, False),
}


def preset_names() -> list[str]:
    return sorted(_SHAPES)


def model_preset(name: str) -> ModelSpec:
    if name not in _SHAPES:
        raise InvalidArgument(f"unknown model preset {name!r}; known: {', '.join(preset_names())}")
    layers, hidden, inter, heads, kv, vocab, tied = _SHAPES[name]
    return ModelSpec(
        family="llama",
        num_layers=layers,
        hidden_size=hidden,
        intermediate_size=inter,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=hidden // heads,
        vocab_size=vocab,
        tie_word_embeddings=tied,
        torch_dtype="bfloat16",
    )
