"""Paged decode attention in Triton over the engine's block tables.

One query token per sequence, keys and values read straight from the paged cache
([slots, kv_heads, D], slot = block * block_size + offset) through each sequence's
block table; no gathered copy. GQA: one program serves every query head of a KV
head, so each K/V block is read once per group. Split-K: a sequence's blocks are cut
into `splits` ranges run by separate programs (few long sequences still fill the
GPU); a second kernel merges their partial softmaxes. Accumulation is fp32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _decode_partial_kernel(
    q_ptr,  # [B, Hq, D]
    k_ptr,  # [S, Hkv, D]
    v_ptr,
    tables_ptr,  # [B, max_blocks] int32
    lengths_ptr,  # [B] int32
    acc_ptr,  # [B, Hq, SPLITS, D] fp32
    ml_ptr,  # [B, Hq, SPLITS, 2] fp32: running max and sum of exp
    scale,
    max_blocks,
    n_kv_heads,
    GROUP: tl.constexpr,
    GROUP_P: tl.constexpr,
    D: tl.constexpr,
    D_P: tl.constexpr,
    BLOCK: tl.constexpr,
    SPLITS: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1).to(tl.int64)
    s = tl.program_id(2)
    length = tl.load(lengths_ptr + b)
    n_blocks = tl.cdiv(length, BLOCK)
    per_split = tl.cdiv(n_blocks, SPLITS)
    first, last = s * per_split, tl.minimum((s + 1) * per_split, n_blocks)

    g = tl.arange(0, GROUP_P)
    d = tl.arange(0, D_P)
    gmask, dmask = g < GROUP, d < D
    n_q_heads = n_kv_heads * GROUP
    q_rows = q_ptr + (b * n_q_heads + h * GROUP + g)[:, None] * D + d[None, :]
    q = tl.load(q_rows, mask=gmask[:, None] & dmask[None, :], other=0.0).to(tl.float32)

    m = tl.full((GROUP_P,), float("-inf"), tl.float32)
    lsum = tl.zeros((GROUP_P,), tl.float32)
    acc = tl.zeros((GROUP_P, D_P), tl.float32)
    offs = tl.arange(0, BLOCK)
    for j in range(first, last):
        block = tl.load(tables_ptr + b * max_blocks + j).to(tl.int64)
        pos = j * BLOCK + offs
        valid = pos < length
        slot = block * BLOCK + offs
        kv_off = (slot * n_kv_heads + h)[:, None] * D + d[None, :]
        kv_mask = valid[:, None] & dmask[None, :]
        k = tl.load(k_ptr + kv_off, mask=kv_mask, other=0.0).to(tl.float32)  # [BLOCK, D_P]
        v = tl.load(v_ptr + kv_off, mask=kv_mask, other=0.0).to(tl.float32)
        scores = tl.sum(q[:, None, :] * k[None, :, :], 2) * scale  # [GROUP_P, BLOCK]
        scores = tl.where(valid[None, :], scores, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, 1))
        p = tl.exp(scores - m_new[:, None])
        alpha = tl.exp(m - m_new)
        lsum = lsum * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.sum(p[:, :, None] * v[None, :, :], 1)
        m = m_new

    heads = b * n_q_heads + h * GROUP + g
    out_rows = (heads * SPLITS + s)[:, None] * D + d[None, :]
    tl.store(acc_ptr + out_rows, acc, mask=gmask[:, None] & dmask[None, :])
    tl.store(ml_ptr + (heads * SPLITS + s) * 2, m, mask=gmask)
    tl.store(ml_ptr + (heads * SPLITS + s) * 2 + 1, lsum, mask=gmask)


@triton.jit
def _decode_merge_kernel(
    acc_ptr, ml_ptr, out_ptr, D: tl.constexpr, D_P: tl.constexpr, SPLITS: tl.constexpr
):
    row = tl.program_id(0).to(tl.int64)  # b * Hq + head
    sp = tl.arange(0, SPLITS)
    d = tl.arange(0, D_P)
    m = tl.load(ml_ptr + (row * SPLITS + sp) * 2)
    lsum = tl.load(ml_ptr + (row * SPLITS + sp) * 2 + 1)
    m_all = tl.max(m, 0)
    # An empty split has m = -inf and weighs nothing (a sequence is never empty).
    w = tl.where(m == float("-inf"), 0.0, tl.exp(m - m_all))
    acc = tl.load(
        acc_ptr + (row * SPLITS + sp)[:, None] * D + d[None, :], mask=(d < D)[None, :], other=0.0
    )
    out = tl.sum(acc * w[:, None], 0) / tl.sum(lsum * w, 0)
    tl.store(out_ptr + row * D + d, out.to(out_ptr.dtype.element_ty), mask=d < D)


def paged_decode_attention(
    q: torch.Tensor,  # [B, Hq, D]
    k_cache: torch.Tensor,  # [slots, Hkv, D]
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,  # [B, max_blocks] int32
    lengths: torch.Tensor,  # [B] int32, tokens of each context (the new one included)
    block_size: int,
    scale: float,
    splits: int | None = None,
) -> torch.Tensor:
    """Attention output [B, Hq, D] in q's dtype."""
    b, hq, d = q.shape
    hkv = k_cache.shape[1]
    if hq % hkv or block_size & (block_size - 1):
        raise ValueError("needs Hq divisible by Hkv and a power-of-two block size")
    if splits is None:  # enough programs to fill a GPU (~4 per SM on 132 SMs)
        want = max(1, 512 // max(1, b * hkv))
        splits = min(triton.next_power_of_2(want), triton.next_power_of_2(block_tables.shape[1]))
    q = q.contiguous()
    acc = torch.empty((b, hq, splits, d), dtype=torch.float32, device=q.device)
    ml = torch.empty((b, hq, splits, 2), dtype=torch.float32, device=q.device)
    group = hq // hkv
    _decode_partial_kernel[(b, hkv, splits)](
        q,
        k_cache,
        v_cache,
        block_tables,
        lengths,
        acc,
        ml,
        scale,
        block_tables.shape[1],
        hkv,
        GROUP=group,
        GROUP_P=triton.next_power_of_2(group),
        D=d,
        D_P=triton.next_power_of_2(d),
        BLOCK=block_size,
        SPLITS=splits,
    )
    out = torch.empty_like(q)
    _decode_merge_kernel[(b * hq,)](acc, ml, out, D=d, D_P=triton.next_power_of_2(d), SPLITS=splits)
    return out
