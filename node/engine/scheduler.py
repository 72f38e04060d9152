"""Continuous batching on the node that drives requests (the first shard).

Each step mixes decodes (one token each) with chunked prefills, inside a token
budget, admitting waiting requests only when the KV cache can hold their prompt.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from node.engine.kv_blocks import KVBlockManager
from node.engine.runner import Chunk


class SeqState(Enum):
    WAITING = "waiting"  # admitted to the queue, holds no KV
    RUNNING = "running"  # holds KV; has tokens to compute
    IN_FLIGHT = "in_flight"  # its last chunk was sent; awaiting the sampled token
    FINISHED = "finished"


@dataclass
class Sequence:
    request_id: str
    token_ids: list[int]  # prompt, then generated tokens
    num_prompt: int
    num_computed: int = 0  # tokens whose KV is in the cache
    state: SeqState = SeqState.WAITING

    @property
    def remaining(self) -> int:
        return len(self.token_ids) - self.num_computed


@dataclass
class Scheduler:
    kv: KVBlockManager
    max_batch_tokens: int
    max_running: int
    waiting: deque[Sequence] = field(default_factory=deque)
    running: list[Sequence] = field(default_factory=list)  # RUNNING or IN_FLIGHT
    preemptions: int = 0  # requests whose KV was freed to make room (they re-prefill)
    preempted: list[str] = field(default_factory=list)  # ids since the owner last took them

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting) or any(s.state is SeqState.RUNNING for s in self.running)

    def schedule(self, max_decodes: int | None = None) -> list[Chunk]:
        """`max_decodes` caps decodes per step: a pipeline's first node splits its
        requests into micro-batches so every stage has one to work on."""
        budget, chunks, decodes = self.max_batch_tokens, [], 0
        # Decodes first: they are latency-critical and cost one token each.
        for seq in sorted(self._ready(), key=lambda s: s.remaining != 1):
            if budget <= 0:
                break
            if seq.state is not SeqState.RUNNING:  # preempted earlier in this loop
                continue
            if seq.remaining == 1 and max_decodes is not None and decodes >= max_decodes:
                continue
            decodes += seq.remaining == 1
            n = min(seq.remaining, budget)
            while not self.kv.can_grow(seq.request_id, seq.num_computed + n):
                if not self._preempt_youngest(other_than=seq):
                    break
            if not self.kv.can_grow(seq.request_id, seq.num_computed + n):
                continue
            chunks.append(self._take(seq, n))
            budget -= n
        while self.waiting and budget > 0 and len(self.running) < self.max_running:
            seq = self.waiting[0]
            # Admit only when the whole prompt fits, plus one block to start decoding.
            if not self.kv.can_grow(seq.request_id, len(seq.token_ids) + self.kv.block_size):
                break
            self.waiting.popleft()
            seq.state = SeqState.RUNNING
            self.running.append(seq)
            n = min(seq.remaining, budget)
            chunks.append(self._take(seq, n))
            budget -= n
        return chunks

    def _ready(self) -> list[Sequence]:
        return [s for s in self.running if s.state is SeqState.RUNNING]

    def _take(self, seq: Sequence, n: int) -> Chunk:
        # Reserve the KV now: later chunks of this step must see the blocks as taken.
        self.kv.grow(seq.request_id, seq.num_computed + n)
        start = seq.num_computed
        seq.num_computed += n
        sample = seq.num_computed == len(seq.token_ids)
        if sample:
            seq.state = SeqState.IN_FLIGHT
        return Chunk(seq.request_id, start, n, sample, tuple(seq.token_ids[start : start + n]))

    def _preempt_youngest(self, other_than: Sequence) -> bool:
        """Free the most recently admitted running request; it re-prefills later."""
        for victim in reversed(self.running):
            if victim is other_than or victim.state is not SeqState.RUNNING:
                continue
            self.running.remove(victim)
            self.kv.free(victim.request_id)
            victim.num_computed = 0
            victim.state = SeqState.WAITING
            self.waiting.appendleft(victim)
            self.preemptions += 1
            self.preempted.append(victim.request_id)
            return True
        return False

    def on_token(self, seq: Sequence, token_id: int, finished: bool) -> None:
        seq.token_ids.append(token_id)
        if finished:
            self.finish(seq)
        else:
            seq.state = SeqState.RUNNING

    def finish(self, seq: Sequence) -> None:
        seq.state = SeqState.FINISHED
        if seq in self.running:
            self.running.remove(seq)
        if seq in self.waiting:
            self.waiting.remove(seq)
        self.kv.free(seq.request_id)
