"""Reference kernels in plain torch: RMSNorm and paged attention."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F


@dataclass
class AttentionMeta:
    """Per-step attention metadata, built once per forward and shared by all layers.

    Tokens of the step are packed: rows [0, num_decode) are single-token decodes,
    then each prefill chunk's rows follow in order.
    """

    slot_mapping: torch.Tensor  # [T] cache slot each new token's K/V is written to
    num_decode: int
    decode_slots: torch.Tensor | None  # [B, Lmax] cache slots of each decode's context
    decode_mask: torch.Tensor | None  # [B, 1, 1, Lmax] True where a key is visible
    # One entry per prefill chunk: (row start, row count, context slots [ctx], mask or None)
    prefills: list[tuple[int, int, torch.Tensor, torch.Tensor | None]]
    # The decodes' block tables [B, max_blocks] (int32) and context lengths [B] (int32),
    # for kernels that read the paged cache directly; the block size they use.
    decode_tables: torch.Tensor | None = None
    decode_lengths: torch.Tensor | None = None
    block_size: int = 0


class Kernels(Protocol):
    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor: ...

    def add_rms_norm(
        self, x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
    ) -> tuple[torch.Tensor, torch.Tensor]: ...  # (rms_norm(x + residual), x + residual)

    def silu_mul(self, gate_up: torch.Tensor) -> torch.Tensor: ...  # silu(gate) * up

    def rotary(
        self, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...  # may rotate in place

    def attention(
        self,
        q: torch.Tensor,  # [T, Hq, D]
        k: torch.Tensor,  # [T, Hkv, D] new keys of this step
        v: torch.Tensor,
        k_cache: torch.Tensor,  # [slots, Hkv, D]
        v_cache: torch.Tensor,
        meta: AttentionMeta,
        scale: float,
    ) -> torch.Tensor: ...  # [T, Hq, D]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding, HF rotate_half layout (cos/sin from `node.model.rope`)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class TorchKernels:
    paged_decode = False  # kernels that read block tables set this (see AttentionMeta)

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
        return weight * x32.to(dtype)

    def add_rms_norm(self, x, residual, weight, eps):
        s = residual + x
        return self.rms_norm(s, weight, eps), s

    def silu_mul(self, gate_up):
        gate, up = gate_up.split(gate_up.shape[-1] // 2, -1)
        return F.silu(gate) * up

    def rotary(self, q, k, cos, sin):
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

    def attention(self, q, k, v, k_cache, v_cache, meta, scale):
        k_cache.index_copy_(0, meta.slot_mapping, k)
        v_cache.index_copy_(0, meta.slot_mapping, v)
        out = torch.empty_like(q)
        nd = meta.num_decode
        if nd:
            # Decodes are batched: gather each context into a padded [B, Lmax] view.
            kd = k_cache[meta.decode_slots].transpose(1, 2)  # [B, Hkv, L, D]
            vd = v_cache[meta.decode_slots].transpose(1, 2)
            qd = q[:nd].unsqueeze(2)  # [B, Hq, 1, D]
            o = F.scaled_dot_product_attention(
                qd, kd, vd, attn_mask=meta.decode_mask, scale=scale, enable_gqa=True
            )
            out[:nd] = o.squeeze(2)
        for start, n, ctx_slots, mask in meta.prefills:
            qp = q[start : start + n]
            out[start : start + n] = self._prefill(qp, k_cache, v_cache, ctx_slots, mask, scale)
        return out

    @staticmethod
    def _prefill(q, k_cache, v_cache, ctx_slots, mask, scale) -> torch.Tensor:
        """One prefill chunk's attention over its context slots: [n, Hq, D]."""
        qp = q.transpose(0, 1).unsqueeze(0)  # [1, Hq, n, D]
        kp = k_cache[ctx_slots].transpose(0, 1).unsqueeze(0)  # [1, Hkv, ctx, D]
        vp = v_cache[ctx_slots].transpose(0, 1).unsqueeze(0)
        o = F.scaled_dot_product_attention(
            qp, kp, vp, attn_mask=mask, is_causal=mask is None, scale=scale, enable_gqa=True
        )
        return o.squeeze(0).transpose(0, 1)
