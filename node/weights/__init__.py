"""Build a `ShardModel` holding only the tensors of its layer range."""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

from node.kernels import kernels_for
from node.model import ShardModel
from node.model.quant import cat_rows
from node.weights.formats import (
    cast_floats,
    install_quant_modules,
    make_convert,
    pack_state,
    resolve_weights,
)
from parallax.errors import ConfigError, ModelFormatError
from parallax.models.spec import ModelSpec
from parallax.types import LayerRange

_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


def shard_tensor_filter(spec: ModelSpec, layers: LayerRange) -> Callable[[str], bool]:
    """Which HF tensor names a shard needs: only its own layers, embedding, head."""
    first, last = layers.start == 0, layers.end == spec.num_layers

    def wanted(name: str) -> bool:
        m = _LAYER.match(name)
        if m:
            return int(m.group(1)) in layers
        if name == "model.embed_tokens.weight":
            return first or (last and spec.tie_word_embeddings)
        if name in ("model.norm.weight", "lm_head.weight"):
            return last
        return False

    return wanted


def _reused_state(reuse: ShardModel | None, layers: LayerRange) -> dict[str, torch.Tensor]:
    """Tensors a new shard can take from the shard it replaces (no re-read from disk)."""
    if reuse is None:
        return {}
    spec, old, out = reuse.spec, reuse.range, {}
    sd = reuse.state_dict()
    overlap = old.intersect(layers)
    for i in range(overlap.start, overlap.end) if overlap else ():
        src, dst = f"layers.{i - old.start}.", f"layers.{i - layers.start}."
        out.update({dst + k[len(src) :]: v for k, v in sd.items() if k.startswith(src)})
    # Quantized modules hold qweight/qscale, not weight: take every key of the module.
    if layers.start == 0 and reuse.is_first:
        out.update({k: v for k, v in sd.items() if k.startswith("embed_tokens.")})
    if layers.end == spec.num_layers and reuse.is_last:
        out.update({k: v for k, v in sd.items() if k.startswith(("norm", "lm_head."))})
    return out


def _has(sd: dict, module: str) -> bool:
    return any(k.startswith(module + ".") for k in sd)


def _local_state_dict(
    spec: ModelSpec,
    layers: LayerRange,
    hf: dict[str, torch.Tensor],
    reused: dict[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Map HF names onto ShardModel parameters, fusing qkv and gate_up."""

    def take(name: str) -> torch.Tensor:
        try:
            return hf.pop(name)
        except KeyError:
            raise ModelFormatError(f"checkpoint lacks tensor {name!r}") from None

    sd: dict[str, torch.Tensor] = dict(reused)
    for local, i in enumerate(range(layers.start, layers.end)):
        p, a = f"model.layers.{i}.", f"layers.{local}."
        if a + "input_layernorm" in reused:
            continue
        sd[a + "self_attn.qkv.weight"] = cat_rows(
            [take(p + f"self_attn.{x}_proj.weight") for x in "qkv"]
        )
        if spec.attention_bias:
            sd[a + "self_attn.qkv.bias"] = cat_rows(
                [take(p + f"self_attn.{x}_proj.bias") for x in "qkv"]
            )
        sd[a + "self_attn.o_proj.weight"] = take(p + "self_attn.o_proj.weight")
        if spec.qk_norm:
            sd[a + "self_attn.q_norm"] = take(p + "self_attn.q_norm.weight")
            sd[a + "self_attn.k_norm"] = take(p + "self_attn.k_norm.weight")
        sd[a + "mlp.gate_up.weight"] = cat_rows(
            [take(p + "mlp.gate_proj.weight"), take(p + "mlp.up_proj.weight")]
        )
        sd[a + "mlp.down_proj.weight"] = take(p + "mlp.down_proj.weight")
        sd[a + "input_layernorm"] = take(p + "input_layernorm.weight")
        sd[a + "post_attention_layernorm"] = take(p + "post_attention_layernorm.weight")
    if layers.start == 0 and not _has(reused, "embed_tokens"):
        sd["embed_tokens.weight"] = hf.get("model.embed_tokens.weight")
        if sd["embed_tokens.weight"] is None:
            raise ModelFormatError("checkpoint lacks tensor 'model.embed_tokens.weight'")
    if layers.end == spec.num_layers and "norm" not in reused:
        sd["norm"] = take("model.norm.weight")
        head = hf.get("lm_head.weight")
        if head is None and spec.tie_word_embeddings:
            head = hf.get("model.embed_tokens.weight")
        if head is None:
            raise ModelFormatError("checkpoint lacks 'lm_head.weight' and is not tied")
        sd["lm_head.weight"] = head
    return sd


def load_shard_model(
    resolved,  # parallax.models.registry.ResolvedModel
    layers: LayerRange,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    progress: bool = True,
    max_positions: int | None = None,
    reuse: ShardModel | None = None,
    weights: str = "auto",
) -> ShardModel:
    """Load layers `[start, end)`; tensors `reuse` already holds are taken, not re-read.

    `weights` (`--weights`): auto, fp32 or bf16 hold float weights in `dtype`; q8 and q4
    keep the projections quantized (`node/weights/formats.py`). `reuse` must hold the
    same format (a node's format is fixed for its life).
    """
    spec: ModelSpec = resolved.spec
    kind = resolve_weights(weights, dtype)
    if kind is not None and torch.device(device).type != "cpu":
        raise ConfigError(
            f"--weights {weights} runs torch's CPU int8/int4 kernels only; on {device} use "
            "--weights auto with --dtype bfloat16"
        )
    if layers.end > spec.num_layers:
        raise ModelFormatError(f"layer range {layers} exceeds the model's {spec.num_layers} layers")
    reused = _reused_state(reuse, layers)
    need = shard_tensor_filter(spec, layers)
    have_layers = {int(k.split(".")[1]) + layers.start for k in reused if k.startswith("layers.")}
    have_embed, have_head = _has(reused, "embed_tokens"), "norm" in reused

    def wanted(name: str) -> bool:
        if not need(name):
            return False
        m = _LAYER.match(name)
        if m:
            return int(m.group(1)) not in have_layers
        if name == "model.embed_tokens.weight":
            first_needs = layers.start == 0 and not have_embed
            tied_head_needs = name and spec.tie_word_embeddings and not have_head
            return first_needs or (layers.end == spec.num_layers and tied_head_needs)
        return not have_head  # model.norm.weight, lm_head.weight

    convert = make_convert(kind, dtype)
    if resolved.format == "gguf":
        from node.weights.gguf_loader import load_gguf_tensors

        hf = load_gguf_tensors(resolved.path, spec, wanted, dtype, progress, convert)
    else:
        from node.weights.safetensors_loader import load_safetensors

        hf = load_safetensors(resolved.path, wanted, dtype, progress, convert)
    sd = pack_state(_local_state_dict(spec, layers, hf, reused))
    # Build on the meta device, then adopt the loaded tensors: memory follows the shard.
    with torch.device("meta"):
        model = ShardModel(spec, layers)
    install_quant_modules(model, sd, dtype)
    model.load_state_dict(sd, assign=True, strict=True)
    model.to(device=device).eval()
    cast_floats(model, dtype)
    model.requires_grad_(False)
    model.setup_rotary(max_positions or spec.max_position_embeddings)
    model.kernels = kernels_for(device)
    return model
