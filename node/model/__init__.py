"""Decoder-only transformer code (Llama, Mistral, Qwen2, Qwen3) for one device.

It knows nothing of sharding: a shard is just the layers `[start, end)` it is
built with, plus the embedding when start == 0 and the head when end == L.
"""

from node.model.transformer import ShardModel

__all__ = ["ShardModel"]
