"""The kernel interface on Triton: picked automatically on CUDA when triton imports.

Fused residual add + RMSNorm, SiLU-and-multiply and in-place rotary for every step;
paged decode attention for the decode rows (prefill chunks keep torch's SDPA, which
is compute-bound and already fast). Untested on a GPU so far: the default suite
checks each kernel against `TorchKernels` in Triton's CPU interpreter.
"""

from __future__ import annotations

import torch

from node.kernels.torch_kernels import AttentionMeta, TorchKernels
from node.kernels.triton_attention import paged_decode_attention
from node.kernels.triton_ops import add_rms_norm, rotary_, silu_mul


class TritonKernels(TorchKernels):
    paged_decode = True  # the runner builds block tables and lengths for the decodes
    rotary_signed_sin = False  # `rotary_` takes the plain sin table

    def rms_norm(self, x, weight, eps):
        return add_rms_norm(x, None, weight, eps)[0]

    def add_rms_norm(self, x, residual, weight, eps):
        return add_rms_norm(x, residual, weight, eps)

    def silu_mul(self, gate_up):
        return silu_mul(gate_up)

    def rotary(self, x, cos, sin):
        return rotary_(x, cos, sin)

    def attention(self, q, k, v, k_cache, v_cache, meta: AttentionMeta, scale):
        if meta.decode_tables is None or not meta.num_decode:
            return super().attention(q, k, v, k_cache, v_cache, meta, scale)
        k_cache.index_copy_(0, meta.slot_mapping, k)
        v_cache.index_copy_(0, meta.slot_mapping, v)
        nd = meta.num_decode
        out = torch.empty_like(q)
        out[:nd] = paged_decode_attention(
            q[:nd],
            k_cache,
            v_cache,
            meta.decode_tables,
            meta.decode_lengths,
            meta.block_size,
            scale,
        )
        for start, n, ctx_slots, mask in meta.prefills:
            out[start : start + n] = self._prefill(
                q[start : start + n], k_cache, v_cache, ctx_slots, mask, scale
            )
        return out
