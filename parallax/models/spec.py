"""`ModelSpec`: the architecture facts every side needs, read from a model's config.

Torch-free: the scheduler sizes layers, KV and FLOPs from this, and the node
builds its modules from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parallax.errors import ModelFormatError

SUPPORTED_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class RopeScaling:
    """Llama-3 style frequency scaling (`rope_type == "llama3"`); None means plain RoPE."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of a decoder-only transformer. Sizes are in elements, not bytes."""

    family: str  # "llama" | "mistral" | "qwen2" | "qwen3"
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # Qwen2: bias on q, k, v projections
    qk_norm: bool = False  # Qwen3: RMSNorm on q and k per head
    sliding_window: int | None = None
    torch_dtype: str = "float32"  # the checkpoint's own dtype
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ModelFormatError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        for name in ("num_layers", "hidden_size", "intermediate_size", "head_dim", "vocab_size"):
            if getattr(self, name) <= 0:
                raise ModelFormatError(f"model config field {name} must be positive")

    # ---- sizes used by the scheduler's performance model ----
    def params_per_layer(self) -> int:
        h, i = self.hidden_size, self.intermediate_size
        q = self.num_attention_heads * self.head_dim
        kv = self.num_key_value_heads * self.head_dim
        attn = h * q + 2 * h * kv + q * h
        if self.attention_bias:
            attn += q + 2 * kv
        norms = 2 * h + (2 * self.head_dim if self.qk_norm else 0)
        return attn + 3 * h * i + norms

    def bytes_per_layer(self, dtype_bytes: int) -> int:
        return self.params_per_layer() * dtype_bytes

    def flops_per_token_per_layer(self, context: int = 0) -> int:
        """Dense matmul FLOPs for one token through one layer, plus attention over `context`."""
        attn_scores = 4 * self.num_attention_heads * self.head_dim * context
        return 2 * self.params_per_layer() + attn_scores

    def kv_bytes_per_token_per_layer(self, dtype_bytes: int) -> int:
        return 2 * self.num_key_value_heads * self.head_dim * dtype_bytes

    def embedding_bytes(self, dtype_bytes: int) -> int:
        return self.vocab_size * self.hidden_size * dtype_bytes

    def head_bytes(self, dtype_bytes: int) -> int:
        """Final norm plus lm_head; a tied head re-uses the embedding but still costs memory."""
        return (self.vocab_size + 1) * self.hidden_size * dtype_bytes

    def activation_bytes_per_token(self, dtype_bytes: int) -> int:
        return self.hidden_size * dtype_bytes

    # ---- constructors ----
    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any]) -> ModelSpec:
        archs = cfg.get("architectures") or []
        family = None
        for a in archs:
            family = SUPPORTED_ARCHITECTURES.get(a)
            if family:
                break
        if family is None:
            family = {
                "llama": "llama",
                "mistral": "mistral",
                "qwen2": "qwen2",
                "qwen3": "qwen3",
            }.get(cfg.get("model_type", ""))
        if family is None:
            raise ModelFormatError(
                f"unsupported architecture {archs or cfg.get('model_type')!r}; "
                f"supported: {', '.join(sorted(SUPPORTED_ARCHITECTURES))}"
            )
        try:
            heads = int(cfg["num_attention_heads"])
            hidden = int(cfg["hidden_size"])
            rope = cfg.get("rope_scaling") or cfg.get("rope_parameters") or None
            scaling = None
            if rope and rope.get("rope_type", rope.get("type")) == "llama3":
                scaling = RopeScaling(
                    factor=float(rope["factor"]),
                    low_freq_factor=float(rope["low_freq_factor"]),
                    high_freq_factor=float(rope["high_freq_factor"]),
                    original_max_position_embeddings=int(rope["original_max_position_embeddings"]),
                )
            theta = cfg.get("rope_theta")
            if theta is None and isinstance(rope, dict):
                theta = rope.get("rope_theta")
            eos = cfg.get("eos_token_id")
            eos_ids = tuple(eos) if isinstance(eos, list) else ((eos,) if eos is not None else ())
            return cls(
                family=family,
                num_layers=int(cfg["num_hidden_layers"]),
                hidden_size=hidden,
                intermediate_size=int(cfg["intermediate_size"]),
                num_attention_heads=heads,
                num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
                head_dim=int(cfg.get("head_dim") or hidden // heads),
                vocab_size=int(cfg["vocab_size"]),
                rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
                rope_theta=float(theta or 10000.0),
                rope_scaling=scaling,
                max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
                tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                attention_bias=bool(cfg.get("attention_bias", family == "qwen2")),
                qk_norm=family == "qwen3",
                sliding_window=_sliding_window(cfg, family),
                torch_dtype=str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32"),
                bos_token_id=cfg.get("bos_token_id"),
                eos_token_ids=tuple(int(e) for e in eos_ids),
            )
        except KeyError as e:
            raise ModelFormatError(f"model config.json lacks required field {e.args[0]!r}") from e

    @classmethod
    def from_hf_dir(cls, path: str | Path) -> ModelSpec:
        cfg_path = Path(path) / "config.json"
        if not cfg_path.is_file():
            raise ModelFormatError(f"{path} has no config.json; is it a Hugging Face model folder?")
        try:
            cfg = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as e:
            raise ModelFormatError(f"{cfg_path} is not valid JSON: {e}") from e
        return cls.from_hf_config(cfg)


def _sliding_window(cfg: dict[str, Any], family: str) -> int | None:
    """Positions a query attends back to, on every layer. Mistral sets `sliding_window`
    (null in v0.2 and later); Qwen2 only uses one with `use_sliding_window`, and then
    only from layer `max_window_layers` on."""
    window = cfg.get("sliding_window")
    kinds = set(cfg.get("layer_types") or ())
    if kinds - {"full_attention", "sliding_attention"} or len(kinds) > 1:
        raise ModelFormatError(
            f"layer_types {sorted(kinds)} mix attention kinds across layers; only all "
            "full_attention or all sliding_attention is supported"
        )
    if kinds == {"full_attention"}:  # written out by newer transformers: it decides
        return None
    if window is None or not (family == "mistral" or cfg.get("use_sliding_window") or kinds):
        return None
    if not isinstance(window, int) or window < 1:
        raise ModelFormatError(f"sliding_window must be a positive integer, not {window!r}")
    if family != "mistral" and not kinds:
        # Qwen2 slides only on layers from `max_window_layers` on (as transformers does).
        layers = cfg.get("num_hidden_layers", 0)
        first = cfg.get("max_window_layers", 0)
        if isinstance(first, int) and first >= layers:
            return None
        if first:
            raise ModelFormatError(
                f"sliding_window on layers {first} and up only (max_window_layers={first} of "
                f"{layers}) is not supported: set use_sliding_window to false, or "
                "max_window_layers to 0 (every layer) or the layer count (none)"
            )
    return window
