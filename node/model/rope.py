"""Rotary position embeddings (HF rotate_half layout), with Llama-3 frequency scaling."""

from __future__ import annotations

import math

import torch

from node.kernels.torch_kernels import apply_rotary
from parallax.models.spec import ModelSpec

__all__ = ["RotaryTable", "apply_rotary", "inverse_frequencies"]


def inverse_frequencies(spec: ModelSpec) -> torch.Tensor:
    d = spec.head_dim
    inv = 1.0 / (spec.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    s = spec.rope_scaling
    if s is None:
        return inv
    # Llama-3: keep high frequencies, divide low ones by `factor`, blend in between.
    low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > low_wavelen, inv / s.factor, inv)
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, smoothed, scaled)


class RotaryTable:
    """cos/sin for every position up to `max_positions`, computed once."""

    def __init__(self, spec: ModelSpec, max_positions: int, dtype: torch.dtype, device):
        inv = inverse_frequencies(spec).to(device)
        t = torch.arange(max_positions, device=device, dtype=torch.float32)
        freqs = torch.outer(t, inv)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos = emb.cos().to(dtype)
        self.sin = emb.sin().to(dtype)
        half = emb.shape[-1] // 2
        # rotate_half's sign folded into the table (`apply_rotary_signed`).
        self.sin_signed = torch.cat((-self.sin[:, :half], self.sin[:, half:]), -1)

    def lookup(
        self, positions: torch.Tensor, signed: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin [T, 1, D] of `positions`; `signed`: sin with its first half negated."""
        sin = self.sin_signed if signed else self.sin
        return self.cos[positions].unsqueeze(1), sin[positions].unsqueeze(1)
