"""What this machine offers, measured at start: matmul FLOP/s, memory bandwidth, memory.

Measured rather than looked up in a table, so an unknown CPU or a busy GPU is
described as it actually performs. About `seconds` of wall time in total.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from parallax.errors import ConfigError
from parallax.rpc import parallax_pb2 as pb

GiB = float(1 << 30)


@dataclass(frozen=True)
class Hardware:
    device: str  # "cpu" | "cuda"
    device_name: str
    flops: float  # dense matmul FLOP/s
    mem_bandwidth: float  # bytes/s (read plus write)
    memory_bytes: float  # offered for weights plus KV

    def to_pb(self) -> pb.Hardware:
        return pb.Hardware(
            device=self.device,
            device_name=self.device_name,
            flops=self.flops,
            mem_bandwidth=self.mem_bandwidth,
            memory_bytes=self.memory_bytes,
        )


def _timed(fn: Callable[[], object], budget_s: float, sync: Callable[[], None]) -> float:
    """Seconds per call of `fn`, repeated for about `budget_s` after one warm-up call."""
    fn()
    sync()
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        sync()
        elapsed = time.perf_counter() - t0
        if elapsed >= budget_s:
            return elapsed / calls


def measure_flops(device: torch.device, budget_s: float, sync: Callable[[], None]) -> float:
    # Big enough that a GPU is compute-bound rather than launch-bound.
    n = 8192 if device.type == "cuda" else 512
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    per_call = _timed(lambda: torch.mm(a, b, out=out), budget_s, sync)
    return 2.0 * n**3 / per_call


def measure_bandwidth(device: torch.device, budget_s: float, sync: Callable[[], None]) -> float:
    # Far larger than any CPU cache, so the copy streams from memory.
    nbytes = (512 if device.type == "cuda" else 64) * (1 << 20)
    src = torch.empty(nbytes // 4, device=device, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    per_call = _timed(lambda: dst.copy_(src), budget_s, sync)
    return 2.0 * nbytes / per_call  # every byte is read once and written once


def available_memory(device: torch.device) -> float:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return float(free)
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024.0
    return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def measure_hardware(device: str, seconds: float = 1.5, memory_gb: float = 0.0) -> Hardware:
    """Benchmark `device` for about `seconds`; `memory_gb > 0` overrides measured memory."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device=cuda but torch sees no CUDA device; use --device cpu")
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    flops = measure_flops(dev, seconds / 2, sync)
    bandwidth = measure_bandwidth(dev, seconds / 2, sync)
    memory = memory_gb * GiB if memory_gb > 0 else available_memory(dev)
    return Hardware(
        device=dev.type,
        device_name=device_name(dev),
        flops=flops,
        mem_bandwidth=bandwidth,
        memory_bytes=memory,
    )
