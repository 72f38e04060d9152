"""`--weights`: how a shard holds its weights (float dtype, or kept quantized)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from node.model.quant import QuantEmbedding, QuantLinear, QuantTensor, pack, quantize
from parallax.errors import ConfigError

_FLOAT = {"fp32": torch.float32, "bf16": torch.bfloat16}
_PROJ = re.compile(r"^model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj\.weight$")
_TABLES = ("model.embed_tokens.weight", "lm_head.weight")


def resolve_weights(weights: str, dtype: torch.dtype) -> str | None:
    """The quantized kind (q8, q4) or None for float weights in `dtype`."""
    if weights in ("auto", None):
        return None
    if weights in _FLOAT:
        if _FLOAT[weights] != dtype:
            raise ConfigError(
                f"--weights {weights} holds weights in {_FLOAT[weights]} but --dtype is {dtype}: "
                "weights and compute share one dtype; pass the matching --dtype or --weights auto"
            )
        return None
    if weights in ("q8", "q4"):
        return weights
    raise ConfigError(f"--weights {weights!r}: choose one of auto, fp32, bf16, q8, q4")


def make_convert(kind: str | None, dtype: torch.dtype) -> Callable[[str, torch.Tensor], Any]:
    """Per tensor at load: projections quantized to `kind`, the embedding and head to q8
    (with q4 too: the head is the most sensitive matrix), everything else cast to `dtype`."""

    def convert(name: str, t: torch.Tensor) -> Any:
        if kind is not None and t.dim() == 2:
            if _PROJ.match(name):
                return quantize(t, kind)
            if name in _TABLES:
                return quantize(t, "q8")
        return t.to(dtype)

    return convert


def pack_state(sd: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Replace each `X.weight` QuantTensor by `X.qweight` and `X.qscale` (packed once
    per tensor: a tied embedding and head share their buffers)."""
    out: dict[str, torch.Tensor] = {}
    packed: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for key, value in sd.items():
        if not isinstance(value, QuantTensor):
            out[key] = value
            continue
        if id(value) not in packed:
            packed[id(value)] = pack(value)
        prefix = key.removesuffix(".weight")
        out[prefix + ".qweight"], out[prefix + ".qscale"] = packed[id(value)]
    return out


def install_quant_modules(model: nn.Module, sd: dict[str, torch.Tensor], dtype) -> None:
    """Swap each Linear/Embedding whose state is quantized for its quantized module."""
    for key in [k for k in sd if k.endswith(".qweight")]:
        prefix = key.removesuffix(".qweight")
        parent_name, _, child = prefix.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        qweight, qscale = sd[key], sd[prefix + ".qscale"]
        if isinstance(getattr(parent, child), nn.Embedding):
            module: nn.Module = QuantEmbedding(qweight, qscale, dtype)
        else:
            module = QuantLinear(qweight, qscale, sd.get(prefix + ".bias"))
        setattr(parent, child, module)


def cast_floats(model: nn.Module, dtype: torch.dtype) -> None:
    """`model.to(dtype)` that leaves the quantized modules' scales in the kernels' dtype."""
    for m in model.modules():
        if isinstance(m, QuantLinear | QuantEmbedding):
            if getattr(m, "bias", None) is not None:
                m.bias.data = m.bias.data.to(dtype)
            continue
        for p in m.parameters(recurse=False):
            p.data = p.data.to(dtype)
