"""Triton kernels for the elementwise ops of a layer: fused residual add + RMSNorm,
SiLU-and-multiply, and rotary embedding in place.

Each computes in fp32 and rounds where the torch reference (`TorchKernels`) rounds, so
bf16/fp16 results match it to the last bit or two. On CPU they run in Triton's
interpreter (TRITON_INTERPRET=1), which is how the default test suite checks them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _add_rms_norm_kernel(
    x_ptr, r_ptr, w_ptr, out_ptr, res_ptr, n_cols, eps, HAS_RES: tl.constexpr, BLOCK: tl.constexpr
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * n_cols + cols, mask=mask, other=0.0)
    if HAS_RES:
        # The sum is rounded to the activation dtype first, as `x + a` is in torch.
        x = (x.to(tl.float32) + tl.load(r_ptr + row * n_cols + cols, mask=mask, other=0.0)).to(
            x.dtype
        )
        tl.store(res_ptr + row * n_cols + cols, x, mask=mask)
    xf = x.to(tl.float32)
    inv = tl.rsqrt(tl.sum(xf * xf, 0) / n_cols + eps)
    normed = (xf * inv).to(x.dtype).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * n_cols + cols, (normed * w).to(x.dtype), mask=mask)


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rms_norm(x + residual) * weight, x + residual); without a residual, of x."""
    shape = x.shape
    x2 = x.reshape(-1, shape[-1]).contiguous()
    n_rows, n_cols = x2.shape
    out = torch.empty_like(x2)
    res = torch.empty_like(x2) if residual is not None else x2
    r2 = residual.reshape(-1, n_cols).contiguous() if residual is not None else x2
    _add_rms_norm_kernel[(n_rows,)](
        x2,
        r2,
        weight,
        out,
        res,
        n_cols,
        eps,
        HAS_RES=residual is not None,
        BLOCK=triton.next_power_of_2(n_cols),
    )
    return out.view(shape), res.view(shape)


@triton.jit
def _silu_mul_kernel(x_ptr, out_ptr, inter, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < inter
    g = tl.load(x_ptr + row * 2 * inter + cols, mask=mask, other=0.0)
    u = tl.load(x_ptr + row * 2 * inter + inter + cols, mask=mask, other=0.0)
    gf = g.to(tl.float32)
    silu = (gf / (1.0 + tl.exp(-gf))).to(g.dtype).to(tl.float32)
    tl.store(out_ptr + row * inter + cols, (silu * u.to(tl.float32)).to(g.dtype), mask=mask)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up of a [..., 2 * I] tensor whose halves are gate and up."""
    shape = gate_up.shape
    inter = shape[-1] // 2
    x2 = gate_up.reshape(-1, shape[-1]).contiguous()
    out = torch.empty((x2.shape[0], inter), dtype=x2.dtype, device=x2.device)
    block = min(1024, triton.next_power_of_2(inter))
    _silu_mul_kernel[(x2.shape[0], triton.cdiv(inter, block))](x2, out, inter, BLOCK=block)
    return out.view(*shape[:-1], inter)


@triton.jit
def _rotary_kernel(x_ptr, cos_ptr, sin_ptr, stride_t, stride_h, half, BLOCK: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1).to(tl.int64)
    i = tl.arange(0, BLOCK)
    mask = i < half
    base = x_ptr + t * stride_t + h * stride_h
    x1 = tl.load(base + i, mask=mask, other=0.0)
    x2 = tl.load(base + half + i, mask=mask, other=0.0)
    c1 = tl.load(cos_ptr + t * 2 * half + i, mask=mask, other=0.0).to(tl.float32)
    c2 = tl.load(cos_ptr + t * 2 * half + half + i, mask=mask, other=0.0).to(tl.float32)
    s1 = tl.load(sin_ptr + t * 2 * half + i, mask=mask, other=0.0).to(tl.float32)
    s2 = tl.load(sin_ptr + t * 2 * half + half + i, mask=mask, other=0.0).to(tl.float32)
    f1, f2 = x1.to(tl.float32), x2.to(tl.float32)
    tl.store(base + i, (f1 * c1 - f2 * s1).to(x1.dtype), mask=mask)
    tl.store(base + half + i, (f2 * c2 + f1 * s2).to(x1.dtype), mask=mask)


def rotary_(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [T, H, D] in place (HF rotate_half layout); cos/sin [T, D] (or [T, 1, D])
    from `RotaryTable`, which already carries any Llama-3 frequency scaling."""
    t, h, d = x.shape
    if x.stride(2) != 1:
        raise ValueError("rotary_ needs the head dimension contiguous")
    cos, sin = cos.reshape(t, d).contiguous(), sin.reshape(t, d).contiguous()
    half = d // 2
    _rotary_kernel[(t, h)](
        x, cos, sin, x.stride(0), x.stride(1), half, BLOCK=triton.next_power_of_2(half)
    )
    return x
