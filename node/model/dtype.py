"""`--dtype auto`: bfloat16 on CUDA and on CPUs where it measures faster, else float32."""

from __future__ import annotations

import time

import torch


def _matvec_seconds(dtype: torch.dtype, rows: int, cols: int, reps: int) -> float:
    """Best time of a batch-1 matmul, the shape of a decode's weight read."""
    w = torch.randn(rows, cols).to(dtype)
    x = torch.randn(1, cols).to(dtype)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.nn.functional.linear(x, w)
        best = min(best, time.perf_counter() - t0)
    return best


def choose_dtype(device: str, rows: int = 4096, cols: int = 1024) -> tuple[str, str]:
    """(dtype name, why) for `--dtype auto`.

    On a CPU, bfloat16 halves the bytes a decode reads but only pays where the CPU has
    native BF16 matmuls (AVX-512 BF16, AMX); without them torch emulates it and it is
    slower than float32. So measure: the best of 5 timings of a 16 MB fp32 (8 MB bf16)
    batch-1 matmul in each dtype; bfloat16 must win by 10% (noise on shared machines).
    """
    if str(device).startswith("cuda"):
        return "bfloat16", "CUDA: bfloat16 tensor cores, half the bytes of float32"
    fp32 = _matvec_seconds(torch.float32, rows, cols, 10)
    bf16 = _matvec_seconds(torch.bfloat16, rows, cols, 10)
    speedup = fp32 / bf16
    if speedup >= 1.1:
        return "bfloat16", f"this CPU runs a bfloat16 decode matmul {speedup:.2f}x float32's speed"
    return "float32", (
        f"bfloat16 measured {speedup:.2f}x float32's speed on this CPU (under 1.1x): "
        "float32 keeps exact parity at no cost in speed"
    )
