"""KV cache tensors, sized by a byte budget."""

from __future__ import annotations

import torch

from parallax.models.spec import ModelSpec


def kv_bytes_per_block(spec: ModelSpec, num_layers: int, block_size: int, dtype) -> int:
    itemsize = torch.empty((), dtype=dtype).element_size()
    return 2 * num_layers * block_size * spec.num_key_value_heads * spec.head_dim * itemsize


def blocks_for_budget(
    spec: ModelSpec, num_layers: int, block_size: int, dtype, budget_bytes: float
) -> int:
    return max(1, int(budget_bytes // kv_bytes_per_block(spec, num_layers, block_size, dtype)))


def allocate_kv(
    spec: ModelSpec, num_layers: int, num_blocks: int, block_size: int, dtype, device
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One (k, v) pair per local layer, each [num_blocks * block_size, kv_heads, head_dim]."""
    shape = (num_blocks * block_size, spec.num_key_value_heads, spec.head_dim)
    return [
        (
            torch.zeros(shape, dtype=dtype, device=device),
            torch.zeros(shape, dtype=dtype, device=device),
        )
        for _ in range(num_layers)
    ]
