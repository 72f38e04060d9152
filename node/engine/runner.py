"""One forward step of a shard over packed chunks from many requests."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from node.engine.kv_blocks import KVBlockManager
from node.kernels import AttentionMeta
from node.model import ShardModel
from parallax.errors import KV_FULL_MARK, CapacityError, InvalidArgument
from parallax.types import LayerRange


@dataclass(frozen=True)
class Chunk:
    """Tokens [start, start + n) of one request, computed in this step."""

    request_id: str
    start: int
    n: int
    sample: bool  # the last shard returns logits for this chunk's last token
    token_ids: tuple[int, ...] = ()  # first shard only


class ShardRunner:
    def __init__(self, model: ShardModel, kv: KVBlockManager, caches, device: str = "cpu"):
        self.model, self.kv, self.caches, self.device = model, kv, caches, device

    def check(self, chunk: Chunk) -> None:
        """Reserve KV for a chunk, or raise: it must continue its request's KV exactly.

        Reserving here (not in `run`) makes each check see the chunks checked before it.
        """
        have = self.kv.length(chunk.request_id)
        if chunk.start != have:
            raise InvalidArgument(
                f"request {chunk.request_id}: chunk starts at {chunk.start} but the node holds "
                f"{have} tokens of it"
            )
        if not self.kv.can_grow(chunk.request_id, chunk.start + chunk.n):
            need = self.kv.blocks_needed(chunk.request_id, chunk.start + chunk.n)
            raise CapacityError(
                f"request {chunk.request_id}: {KV_FULL_MARK} on this node "
                f"(needs {need} more blocks, {self.kv.free_blocks} free)"
            )
        if chunk.start + chunk.n > self.model.rotary.cos.shape[0]:
            raise InvalidArgument(f"request {chunk.request_id}: position beyond the context")
        self.kv.grow(chunk.request_id, chunk.start + chunk.n)

    @torch.inference_mode()
    def run(
        self,
        chunks: list[Chunk],
        hidden: torch.Tensor | None = None,
        layers: LayerRange | None = None,
    ) -> torch.Tensor:
        """Hidden rows in chunk order, or logits [sampled chunks, V] on the last shard.

        `layers` runs only part of this shard (a hop that uses a prefix or suffix of it).
        """
        layers = layers or self.model.range
        is_first, is_last = layers.start == 0, layers.end == self.model.spec.num_layers
        for c in chunks:  # a request may have several chunks in one step: grow, never shrink
            if c.start + c.n > self.kv.length(c.request_id):
                self.kv.grow(c.request_id, c.start + c.n)
        # Decodes (one token) first so attention can batch them; remember the permutation.
        order = sorted(range(len(chunks)), key=lambda i: chunks[i].n != 1)
        offsets, at = [], 0
        for c in chunks:
            offsets.append(at)
            at += c.n
        permuted = order != list(range(len(chunks)))
        rows = None
        if permuted:
            rows = torch.cat([torch.arange(offsets[i], offsets[i] + chunks[i].n) for i in order])
        ordered = [chunks[i] for i in order]
        meta, positions = self._meta(ordered)
        if is_first:
            x = torch.tensor([t for i in order for t in chunks[i].token_ids], dtype=torch.long)
        else:
            x = hidden.index_select(0, rows) if permuted else hidden
        logits_rows = None
        if is_last:
            ends, at = {}, 0
            for i in order:
                at += chunks[i].n
                ends[i] = at - 1
            logits_rows = torch.tensor(
                [ends[i] for i, c in enumerate(chunks) if c.sample], dtype=torch.long
            )
        out = self.model(x.to(self.device), positions, self.caches, meta, logits_rows, layers)
        if is_last or not permuted:
            return out
        restored = torch.empty_like(out)
        restored[rows] = out
        return restored

    def _meta(self, chunks: list[Chunk]) -> tuple[AttentionMeta, torch.Tensor]:
        bs, dev = self.kv.block_size, self.device
        # Mistral's sliding window: attention reaches back this many positions (None: all).
        window = self.model.spec.sliding_window
        positions, slots = [], []
        for c in chunks:
            positions.extend(range(c.start, c.start + c.n))
            slots.extend(self.kv.slots(c.request_id, c.start, c.start + c.n))
        decodes = [c for c in chunks if c.n == 1]
        decode_slots = decode_mask = None
        if decodes:
            lengths = [c.start + 1 for c in decodes]
            lmax = max(lengths)
            nblk = -(-lmax // bs)
            tables = torch.zeros(len(decodes), nblk, dtype=torch.long)
            for r, c in enumerate(decodes):
                t = self.kv.table(c.request_id)[:nblk]
                tables[r, : len(t)] = torch.tensor(t)
            all_slots = (tables.unsqueeze(-1) * bs + torch.arange(bs)).view(len(decodes), -1)
            decode_slots = all_slots[:, :lmax].to(dev)
            q_pos = torch.tensor(lengths).unsqueeze(1) - 1
            visible = _visible(q_pos, torch.arange(lmax).unsqueeze(0), window)
            decode_mask = visible.view(len(decodes), 1, 1, lmax).to(dev)
        prefills, row = [], len(decodes)
        for c in chunks[len(decodes) :]:
            ctx = c.start + c.n
            ctx_slots = torch.tensor(self.kv.slots(c.request_id, 0, ctx), device=dev)
            mask = None
            if c.start or (window is not None and ctx > window):
                q_pos = torch.arange(c.start, ctx).unsqueeze(1)
                mask = _visible(q_pos, torch.arange(ctx).unsqueeze(0), window).to(dev)
            prefills.append((row, c.n, ctx_slots, mask))
            row += c.n
        meta = AttentionMeta(
            slot_mapping=torch.tensor(slots, device=dev),
            num_decode=len(decodes),
            decode_slots=decode_slots,
            decode_mask=decode_mask,
            prefills=prefills,
        )
        return meta, torch.tensor(positions, device=dev)


def _visible(q_pos: torch.Tensor, keys: torch.Tensor, window: int | None) -> torch.Tensor:
    """Which keys each query attends to: causal, and within the sliding window if any
    (a query sees the last `window` positions only)."""
    visible = keys <= q_pos
    if window is not None:
        visible &= keys > q_pos - window
    return visible
