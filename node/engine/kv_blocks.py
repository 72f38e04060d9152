"""Paged KV bookkeeping: which cache blocks each request owns. Pure: no torch, no I/O.

A request's tokens live in fixed-size blocks; its block table lists them in order,
so token `p` sits in slot `table[p // block_size] * block_size + p % block_size`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from parallax.errors import ContextOverflow, InvalidArgument


@dataclass
class KVBlockManager:
    num_blocks: int
    block_size: int
    _free: list[int] = field(init=False)
    _tables: dict[str, list[int]] = field(init=False, default_factory=dict)
    _lengths: dict[str, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_blocks < 1 or self.block_size < 1:
            raise InvalidArgument("the KV cache needs at least one block of at least one token")
        # Pop from the end: low block ids are handed out first, which keeps tests readable.
        self._free = list(range(self.num_blocks - 1, -1, -1))

    # ---- queries ----
    @property
    def free_blocks(self) -> int:
        return len(self._free)

    @property
    def free_tokens(self) -> int:
        return len(self._free) * self.block_size

    @property
    def total_tokens(self) -> int:
        return self.num_blocks * self.block_size

    def check_fits(self, prompt_tokens: int) -> None:
        """ContextOverflow unless a prompt this long can start on the whole cache: the
        prompt plus one block to decode into, as the scheduler admits it (else it would
        wait for ever)."""
        if prompt_tokens + self.block_size > self.total_tokens:
            raise ContextOverflow(
                f"the prompt needs {prompt_tokens} KV slots plus a {self.block_size}-token "
                f"block to decode into; this cache holds {self.total_tokens}: raise "
                "--kv-cache-mb"
            )

    def has(self, request_id: str) -> bool:
        return request_id in self._tables

    def length(self, request_id: str) -> int:
        return self._lengths.get(request_id, 0)

    def requests(self) -> list[str]:
        return list(self._tables)

    def table(self, request_id: str) -> list[int]:
        return self._tables.get(request_id, [])

    def blocks_needed(self, request_id: str, new_length: int) -> int:
        have = len(self._tables.get(request_id, ()))
        need = -(-new_length // self.block_size)
        return max(0, need - have)

    def can_grow(self, request_id: str, new_length: int) -> bool:
        return self.blocks_needed(request_id, new_length) <= len(self._free)

    # ---- updates ----
    def grow(self, request_id: str, new_length: int) -> None:
        """Make room for tokens [0, new_length) of the request; raises if out of blocks."""
        if new_length < self._lengths.get(request_id, 0):
            raise InvalidArgument(f"request {request_id}: KV length cannot shrink")
        need = self.blocks_needed(request_id, new_length)
        if need > len(self._free):
            raise MemoryError(f"KV cache full: need {need} blocks, {len(self._free)} free")
        table = self._tables.setdefault(request_id, [])
        for _ in range(need):
            table.append(self._free.pop())
        self._lengths[request_id] = new_length

    def free(self, request_id: str) -> int:
        """Release every block of the request; unknown ids are a no-op. Returns blocks freed."""
        table = self._tables.pop(request_id, None)
        self._lengths.pop(request_id, None)
        if not table:
            return 0
        self._free.extend(reversed(table))
        return len(table)

    def slots(self, request_id: str, start: int, stop: int) -> list[int]:
        """Cache slots of token positions [start, stop)."""
        table, bs = self._tables[request_id], self.block_size
        return [table[p // bs] * bs + p % bs for p in range(start, stop)]

    def check_invariants(self) -> None:
        owned = [b for t in self._tables.values() for b in t]
        every = owned + self._free
        if sorted(every) != list(range(self.num_blocks)):
            raise RuntimeError("KV block accounting is corrupt: a block is lost or shared")
        for rid, t in self._tables.items():
            if len(t) != -(-self._lengths[rid] // self.block_size):
                raise RuntimeError(f"request {rid}: block table does not match its length")
