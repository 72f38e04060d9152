"""One forward step of a shard over packed chunks from many requests."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from node.engine.kv_blocks import KVBlockManager
from node.kernels import AttentionMeta
from node.model import ShardModel
from node.model.packed import can_pack, pack_linears
from parallax.errors import CapacityError, InvalidArgument
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
    def __init__(
        self,
        model: ShardModel,
        kv: KVBlockManager,
        caches,
        device: str = "cpu",
        compile: bool = False,
    ):
        self.model, self.kv, self.caches, self.device = model, kv, caches, device
        if compile and model.compiled is None:
            model.compile_decode()  # decode steps only: prefill shapes vary too much
        if can_pack(device, next(model.parameters()).dtype):
            # bf16 on CPU: weights reordered once for oneDNN (node/model/packed.py); the
            # compiled graphs call them through an op of their own (`packed_linear`).
            pack_linears(model, getattr(model.embed_tokens, "weight", None))

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
                f"request {chunk.request_id}: KV cache full on this node "
                f"(needs {need} more blocks, {self.kv.free_blocks} free)"
            )
        if chunk.start + chunk.n > self.model.rotary.cos.shape[0]:
            raise InvalidArgument(f"request {chunk.request_id}: position beyond the context")
        self.kv.grow(chunk.request_id, chunk.start + chunk.n)

    def run(
        self,
        chunks: list[Chunk],
        hidden: torch.Tensor | None = None,
        layers: LayerRange | None = None,
    ) -> torch.Tensor:
        """Hidden rows in chunk order, or logits [sampled chunks, V] on the last shard.

        `layers` runs only part of this shard (a hop that uses a prefix or suffix of it).
        """
        for c in chunks:  # idempotent: a scheduled chunk's KV is already reserved
            if c.start + c.n > self.kv.length(c.request_id):
                self.kv.grow(c.request_id, c.start + c.n)
        return self.run_groups([(chunks, hidden, layers)])[0]

    @torch.inference_mode()
    def score(self, token_ids: list[int]) -> torch.Tensor:
        """Logits [T, V] after every token of one sequence (whole model only): the
        quality checks' perplexity and teacher-forced greedy agreement."""
        rid = "__score__"
        self.kv.grow(rid, len(token_ids))
        try:
            meta, positions = self._meta([Chunk(rid, 0, len(token_ids), False, ())])
            ids = torch.tensor(token_ids, dtype=torch.long, device=self.device)
            rows = torch.arange(len(token_ids), device=self.device)
            return self.model(ids, positions, self.caches, meta, logits_rows=rows)
        finally:
            self.kv.free(rid)

    @torch.inference_mode()
    def run_groups(self, groups: list[tuple[list[Chunk], torch.Tensor | None, LayerRange | None]]):
        """Run several groups of chunks, each over its own part of this shard, in one
        pass over the layers: a layer runs once for every group that needs it (requests
        cut at different layers share the weight reads). One result per group, as `run`.
        """
        # Every chunk's KV was reserved before the step (`Scheduler._take` for the chunks
        # a first hop schedules, `check` for those that arrive, `run` for direct callers).
        model = self.model
        gs = [_Group(chunks, hidden, layers or model.range) for chunks, hidden, layers in groups]
        for g in gs:
            if g.layers.start == 0:
                ids = [t for c in g.ordered for t in c.token_ids]
                g.x = model.embed(torch.tensor(ids, dtype=torch.long).to(self.device))
            else:
                g.x = g.x.to(self.device)
        cuts = sorted({g.layers.start for g in gs} | {g.layers.end for g in gs})
        metas: dict[tuple[int, ...], tuple] = {}
        for lo, hi in zip(cuts, cuts[1:], strict=False):
            active = tuple(i for i, g in enumerate(gs) if g.layers.start <= lo < g.layers.end)
            if not active:
                continue
            part = [gs[i] for i in active]
            if active not in metas:  # decodes of every active group first, then prefills
                ordered = [c for g in part for c in g.ordered[: g.decodes]]
                ordered += [c for g in part for c in g.ordered[g.decodes :]]
                metas[active] = self._meta(ordered)
            meta, positions = metas[active]
            x = _merge(part)
            # Compiled graphs serve decode-only steps, one graph for batch 1 and one for
            # any larger batch (sizes dynamic). A 16-row step, 1 thread: bf16 0.84x of
            # eager, fp32 0.91x, q4 0.96x (docs/BENCHMARKS.md, 16 streams, #14).
            x = model.run_layers(
                x, positions, self.caches, meta, LayerRange(lo, hi), compiled=not meta.prefills
            )
            _split(part, x)
        return [g.result(model, self.device) for g in gs]

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
        decode_tables = decode_lengths = None
        if decodes:
            lengths = [c.start + 1 for c in decodes]
            lmax = max(lengths)
            nblk = -(-lmax // bs)
            tables = torch.zeros(len(decodes), nblk, dtype=torch.long)
            for r, c in enumerate(decodes):
                t = self.kv.table(c.request_id)[:nblk]
                tables[r, : len(t)] = torch.tensor(t)
            all_slots = (tables.unsqueeze(-1) * bs + torch.arange(bs)).view(len(decodes), -1)
            decode_slots = all_slots[:, :lmax].contiguous().to(dev)
            q_pos = torch.tensor(lengths).unsqueeze(1) - 1
            visible = _visible(q_pos, torch.arange(lmax).unsqueeze(0), window)
            # Every key visible (one decode, or equal lengths and no window): no mask,
            # which SDPA takes as a cheaper call.
            if not bool(visible.all()):
                decode_mask = visible.view(len(decodes), 1, 1, lmax).to(dev)
            if self.model.kernels.paged_decode and window is None:
                decode_tables = tables.to(dev, torch.int32)
                decode_lengths = torch.tensor(lengths, dtype=torch.int32, device=dev)
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
            decode_tables=decode_tables,
            decode_lengths=decode_lengths,
            block_size=bs,
        )
        return meta, torch.tensor(positions, device=dev)


def _visible(q_pos: torch.Tensor, keys: torch.Tensor, window: int | None) -> torch.Tensor:
    """Which keys each query attends to: causal, and within the sliding window if any
    (a query sees the last `window` positions only)."""
    visible = keys <= q_pos
    if window is not None:
        visible &= keys > q_pos - window
    return visible


class _Group:
    """One group's rows through `run_groups`: its chunks decodes first (attention
    batches decodes), and the permutation back to the caller's order."""

    def __init__(self, chunks: list[Chunk], hidden, layers: LayerRange):
        self.chunks, self.layers = chunks, layers
        self.order = sorted(range(len(chunks)), key=lambda i: chunks[i].n != 1)
        self.ordered = [chunks[i] for i in self.order]
        self.decodes = sum(c.n == 1 for c in chunks)
        self.rows = None  # caller's row of each ordered row; None: the same order
        if self.order != list(range(len(chunks))):
            offsets = [0]
            for c in chunks:
                offsets.append(offsets[-1] + c.n)
            self.rows = torch.cat(
                [torch.arange(offsets[i], offsets[i] + chunks[i].n) for i in self.order]
            )
        self.x = hidden
        if hidden is not None and self.rows is not None:
            self.x = hidden.index_select(0, self.rows)

    def result(self, model, device) -> torch.Tensor:
        if self.layers.end == model.spec.num_layers:
            # Logits rows follow the caller's chunk order, as the sampler reads them.
            ends, at = {}, 0
            for i in self.order:
                at += self.chunks[i].n
                ends[i] = at - 1
            rows = [ends[i] for i, c in enumerate(self.chunks) if c.sample]
            return model.head(self.x, torch.tensor(rows, dtype=torch.long, device=device))
        if self.rows is None:
            return self.x
        restored = torch.empty_like(self.x)
        restored[self.rows.to(self.x.device)] = self.x
        return restored


def _merge(part: list[_Group]) -> torch.Tensor:
    """The active groups' rows in the shared order: every decode row, then prefills."""
    if len(part) == 1:
        return part[0].x
    return torch.cat([g.x[: g.decodes] for g in part] + [g.x[g.decodes :] for g in part])


def _split(part: list[_Group], x: torch.Tensor) -> None:
    """Hand each active group its rows back (the inverse of `_merge`)."""
    if len(part) == 1:
        part[0].x = x
        return
    decodes = sum(g.decodes for g in part)
    heads = torch.split(x[:decodes], [g.decodes for g in part])
    tails = torch.split(x[decodes:], [g.x.shape[0] - g.decodes for g in part])
    for g, head, tail in zip(part, heads, tails, strict=True):
        g.x = torch.cat([head, tail])
