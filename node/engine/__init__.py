"""The shard engine: paged KV cache, continuous batching, sampling."""
