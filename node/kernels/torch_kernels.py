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

    # The sin table `rotary` takes: with its first half negated (`RotaryTable.lookup`).
    rotary_signed_sin: bool

    def rotary(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor: ...  # every head of x [T, H, D] (q and k together); may rotate in place

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


def apply_rotary_signed(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor):
    """`apply_rotary` in 4 ops instead of 7, bit for bit: swapping the halves is one
    flip, and the sign of rotate_half lives in the table (`sin_signed` = sin with its
    first half negated). Not `addcmul`: in bfloat16 its fused multiply-add rounds
    differently in its vector and scalar paths, so a token's result would depend on
    the batch around it and a sharded run would part from the local one."""
    *lead, d = x.shape
    swapped = x.view(*lead, 2, d // 2).flip(-2).view(*lead, d)
    return x * cos + swapped * sin_signed


class TorchKernels:
    paged_decode = False  # kernels that read block tables set this (see AttentionMeta)
    rotary_signed_sin = True

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        # Fused ops instead of eight, with HF's rounding: in half precision HF normalizes
        # in fp32, rounds, then scales (F.rms_norm with the weight would round once).
        if x.dtype == torch.float32:
            return F.rms_norm(x, weight.shape, weight, eps)
        return weight * F.rms_norm(x.float(), weight.shape, None, eps).to(x.dtype)

    def add_rms_norm(self, x, residual, weight, eps):
        s = residual + x
        return self.rms_norm(s, weight, eps), s

    def silu_mul(self, gate_up):
        gate, up = gate_up.split(gate_up.shape[-1] // 2, -1)
        return F.silu(gate) * up

    def rotary(self, x, cos, sin):
        return apply_rotary_signed(x, cos, sin)

    def attention(self, q, k, v, k_cache, v_cache, meta, scale):
        k_cache.index_copy_(0, meta.slot_mapping, k)
        v_cache.index_copy_(0, meta.slot_mapping, v)
        nd = meta.num_decode
        if nd and not meta.prefills:  # a decode-only step: no output buffer to fill
            return self._decode(q, k_cache, v_cache, meta, scale)
        out = torch.empty_like(q)
        if nd:
            out[:nd] = self._decode(q[:nd], k_cache, v_cache, meta, scale)
        for start, n, ctx_slots, mask in meta.prefills:
            qp = q[start : start + n]
            out[start : start + n] = self._prefill(qp, k_cache, v_cache, ctx_slots, mask, scale)
        return out

    @staticmethod
    def _decode(q, k_cache, v_cache, meta: AttentionMeta, scale) -> torch.Tensor:
        """The decodes' attention, batched: each context gathered into a padded [B, Lmax]
        view. index_select on whole rows is a plain row copy, several times faster here
        than advanced indexing with a [B, Lmax] index."""
        b, lmax = meta.decode_slots.shape
        flat = meta.decode_slots.reshape(-1)
        kd = k_cache.index_select(0, flat).view(b, lmax, *k_cache.shape[1:]).transpose(1, 2)
        vd = v_cache.index_select(0, flat).view(b, lmax, *v_cache.shape[1:]).transpose(1, 2)
        o = F.scaled_dot_product_attention(
            q.unsqueeze(2), kd, vd, attn_mask=meta.decode_mask, scale=scale, enable_gqa=True
        )  # q [B, Hq, 1, D] against [B, Hkv, L, D]
        return o.squeeze(2)

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
