"""Weights kept quantized in memory: int8 per row (q8) and int4 in groups of 32 (q4).

Matmuls run torch's weight-only CPU kernels (`_weight_int8pack_mm`,
`_weight_int4pack_mm_for_cpu`) on bfloat16 activations: measured on this project's
AVX-512 CPU, both are 2-5x faster than a dense fp32 matmul at batch 1, while with
fp32 activations they are 5-50x slower (no fast path), so activations are cast to
bfloat16 for the matmul only and back to the compute dtype after it.

A q4 layer keeps its embedding and head in q8 (as llama.cpp's Q4 files do): the
head is the largest matrix and the most sensitive to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from parallax.errors import ConfigError

WEIGHT_FORMATS = ("auto", "fp32", "bf16", "q8", "q4")
Q4_GROUP = 32  # int4 columns sharing one scale and zero (GGUF Q4_0/Q4_1/Q4_K blocks)
_ACT = torch.bfloat16  # activation dtype of the integer kernels


@dataclass
class QuantTensor:
    """A weight [N, K] quantized but not packed yet, so fused rows can be concatenated.

    q8: `q` int8 [N, K], `scale` [N] (w = q * scale).
    q4: `q` uint8 [N, K] in 0..15, `scale` and `low` [N, K / 32] (w = q * scale + low).
    """

    kind: str
    q: torch.Tensor
    scale: torch.Tensor
    low: torch.Tensor | None = None

    @property
    def shape(self) -> torch.Size:
        return self.q.shape


def quantize(w: torch.Tensor, kind: str) -> QuantTensor:
    """Quantize a float weight [N, K]; a shape the int4 kernel cannot take gets q8."""
    w = w.float()
    n, k = w.shape
    if kind == "q4" and k % Q4_GROUP == 0 and n % 16 == 0:
        g = w.view(n, k // Q4_GROUP, Q4_GROUP)
        low, high = g.amin(-1), g.amax(-1)
        # min/max over each block: a GGUF Q4_1 block dequantized comes back exactly.
        scale = ((high - low) / 15).clamp(min=1e-10)
        q = torch.round((g - low[..., None]) / scale[..., None]).clamp(0, 15)
        return QuantTensor("q4", q.to(torch.uint8).view(n, k), scale, low)
    scale = (w.abs().amax(1) / 127).clamp(min=1e-10)
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return QuantTensor("q8", q, scale)


def cat_rows(parts: list[torch.Tensor | QuantTensor]) -> torch.Tensor | QuantTensor:
    """`torch.cat` of fused rows (q/k/v, gate/up), quantized or not."""
    if not isinstance(parts[0], QuantTensor):
        return torch.cat(parts)
    kinds = {p.kind for p in parts}
    if len(kinds) > 1:  # one part fell back to q8: requantize the fused weight as q8
        return quantize(torch.cat([dequantize(p) for p in parts]), "q8")
    low = torch.cat([p.low for p in parts]) if parts[0].low is not None else None
    return QuantTensor(
        parts[0].kind,
        torch.cat([p.q for p in parts]),
        torch.cat([p.scale for p in parts]),
        low,
    )


def dequantize(t: QuantTensor) -> torch.Tensor:
    if t.kind == "q8":
        return t.q.float() * t.scale[:, None]
    n, k = t.q.shape
    g = t.q.view(n, k // Q4_GROUP, Q4_GROUP).float()
    return (g * t.scale[..., None] + t.low[..., None]).view(n, k)


def pack(t: QuantTensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(qweight, qscale) in the layout of torch's CPU kernels."""
    if t.kind == "q8":
        return t.q.contiguous(), t.scale.to(_ACT)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(t.q.to(torch.int32), 1)
    # The kernel computes (q - 8) * scale + zero: zero is the block's middle value.
    zero = t.low + 8 * t.scale
    return packed, torch.stack([t.scale, zero], -1).transpose(0, 1).contiguous().to(_ACT)


class QuantLinear(nn.Module):
    """y = x W^T + b with W kept int8 or int4; the kind follows the scale's shape."""

    def __init__(self, qweight: torch.Tensor, qscale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.register_buffer("qweight", qweight)
        self.register_buffer("qscale", qscale)
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None
        self.kind = "q4" if qscale.dim() == 3 else "q8"
        self.out_features = qscale.shape[1] if self.kind == "q4" else qscale.shape[0]
        self.in_features = qweight.shape[1] * (2 if self.kind == "q4" else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype, lead = x.dtype, x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if dtype != _ACT:  # no cast at all when the engine computes in bf16
            x2 = x2.to(_ACT)
        if self.kind == "q8":
            y = torch._weight_int8pack_mm(x2, self.qweight, self.qscale)
        else:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, self.qweight, Q4_GROUP, self.qscale)
        if dtype != _ACT:
            y = y.to(dtype)
        if len(lead) != 1:
            y = y.view(*lead, self.out_features)
        return y + self.bias if self.bias is not None else y


class QuantEmbedding(nn.Module):
    """Rows of a q8 table (the tied head's own buffers when the model ties them)."""

    def __init__(self, qweight: torch.Tensor, qscale: torch.Tensor, dtype: torch.dtype):
        super().__init__()
        if qscale.dim() != 1:
            raise ConfigError("a quantized embedding must be q8 (one scale per row)")
        self.register_buffer("qweight", qweight)
        self.register_buffer("qscale", qscale)
        self.dtype = dtype

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.qweight[ids].to(self.dtype) * self.qscale[ids, None].to(self.dtype)


def module_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers as held in memory (shared ones once),
    plus the weights `PackedLinear` holds in oneDNN's layout (no storage to share)."""
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total + sum(getattr(m, "packed_bytes", 0) for m in module.modules())
