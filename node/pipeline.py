"""A node's part of the pipeline: what one step computes and where results go.

Synchronous and free of gRPC: `step()` returns an `Outbox` of messages for the
server to send. Requests this node starts (first hop) are scheduled here; the
rest arrive as hidden states from the previous hop.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, defaultdict, deque

import torch

from node.engine.runner import Chunk, ShardRunner
from node.engine.sampler import sample
from node.engine.scheduler import Scheduler, Sequence
from node.last_hop import sampleable, start_grammar, token_event
from node.outbox import Outbox, split_rows
from node.request import NodeRequest
from node.submit_check import check_hop, check_request, check_submit
from parallax.errors import CapacityError, InvalidArgument, ParallaxError
from parallax.failures import FailureKind, failure_event
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc.grants import same_signature
from parallax.types import LayerRange
from parallax.wire.codec import encode_tensor
from parallax.wire.limits import MAX_FORWARD_ROWS

log = logging.getLogger(__name__)


class NodePipeline:
    def __init__(
        self,
        node_id: str,
        runner: ShardRunner,
        cfg,
        eos_ids,
        wire_dtype=None,
        vocab_limit=None,
        grammars=None,
    ):
        self.grammars = grammars  # node/grammar.py: None refuses constrained requests
        self.vocab_limit = vocab_limit
        self.micro_batches = cfg.micro_batches
        self.max_batch_tokens = cfg.max_batch_tokens
        self.node_id, self.runner, self.kv = node_id, runner, runner.kv
        self.spec = runner.model.spec
        self.eos_ids, self.wire_dtype = frozenset(eos_ids), wire_dtype
        self.scheduler = Scheduler(self.kv, cfg.max_batch_tokens, cfg.max_running)
        self.reqs: dict[str, NodeRequest] = {}  # everything held per request
        self.incoming: deque[tuple[list[pb.SeqChunk], torch.Tensor]] = deque()
        self.max_context = runner.model.rotary.cos.shape[0]
        # Ids released recently (with the grant signature the release showed): a chunk
        # still in flight for one must not re-allocate KV.
        self.released: OrderedDict[str, bytes] = OrderedDict()
        # Set by the server once it joined a coordinator: every message about a request
        # must then show that request's grant signature (parallax/rpc/grants.py).
        self.enforce_grants = False
        self.on_denied = lambda method, peer, why: None
        self.restarts = 0  # re-prefills from the first hop (it preempted the request)
        self.freed_early = 0  # requests whose KV a KV-only release freed before that

    # ---- inputs (called from RPC handlers, between steps) ----
    def _register(self, request: pb.SubmitRequest) -> NodeRequest:
        """Take a request as the hop its route names: checked whole, as a Submit is (a
        Forward's first chunk comes from a peer, and a bad one must fail alone)."""
        check_request(
            request,
            num_layers=self.spec.num_layers,
            vocab_size=self.spec.vocab_size,
            max_context=self.max_context,
        )
        idx = check_hop(request, node_id=self.node_id, held=self.runner.model.range)
        h = request.route.hops[idx]
        req = self.reqs[request.request_id] = NodeRequest(request, idx, LayerRange(h.start, h.end))
        start_grammar(req, self.spec.num_layers, self.grammars)
        return req

    def check_submit(self, request: pb.SubmitRequest) -> None:
        """Refuse a Submit this node cannot start (read-only: safe during a step)."""
        check_submit(
            request,
            node_id=self.node_id,
            held=self.runner.model.range,
            num_layers=self.spec.num_layers,
            vocab_size=self.spec.vocab_size,
            max_context=self.max_context,
        )
        self.runner.kv.check_fits(len(request.prompt_ids))

    def submit(self, request: pb.SubmitRequest) -> None:
        rid = request.request_id
        # Checked again here: the node may have moved between the RPC and this step.
        self.check_submit(request)
        if rid in self.reqs:
            raise InvalidArgument(f"request id {rid!r} is already running here")
        req = self._register(request)
        ids = list(request.prompt_ids)
        req.seq = Sequence(rid, ids, len(ids))
        self.scheduler.add(req.seq)

    def enqueue(self, msg: pb.ForwardRequest, hidden: torch.Tensor, out: Outbox) -> None:
        """Queue a message's chunks for the next step. A chunk this node cannot take
        (its request released here, unknown, or on a stale route) is dropped alone:
        the others in the message are other requests, which must not stall for it."""
        keep = [self._admit_chunk(c, out) for c in msg.chunks]
        if not all(keep):
            rows = [k for c, k in zip(msg.chunks, keep, strict=True) for _ in range(c.num_tokens)]
            hidden = hidden[torch.tensor(rows, dtype=torch.bool)]
        chunks = [c for c, k in zip(msg.chunks, keep, strict=True) if k]
        if chunks:
            self.incoming.append((chunks, hidden))

    def _admit_chunk(self, c: pb.SeqChunk, out: Outbox) -> bool:
        rid = c.request_id
        if rid in self.released and (
            not self.enforce_grants or same_signature(self.released[rid], c.grant_signature)
        ):
            return False  # freed here while this chunk was in flight
        if rid in self.reqs:
            if self._shows_grant(rid, c.grant_signature, "forward"):
                return True
            return False
        if not c.HasField("request"):
            # Its first chunk (which names the route and the gateway) never arrived or
            # was refused: nobody to tell from here; the gateway's stall timer replays it.
            log.warning("chunk of an unknown request dropped", extra={"request_id": rid})
            return False
        try:
            self._register(c.request)
            return True
        except ParallaxError as e:
            log.warning("request refused", extra={"request_id": rid, "error": str(e)})
            ev = failure_event(rid, FailureKind.of(e), str(e))
            out.delivers[c.request.reply_to].events.append(ev)
            self.release_elsewhere(c.request, "error", out)
            return False

    def on_tokens(self, batch: pb.TokenBatch) -> None:
        for ev in batch.events:
            req = self.reqs.get(ev.request_id)
            if req is not None and not self._shows_grant(req.rid, ev.grant_signature, "push"):
                continue
            if req is not None and req.seq is not None:
                self.scheduler.on_token(req.seq, ev.token_id, finished=ev.finished)
                if ev.finished:
                    self.forget(ev.request_id)

    def _shows_grant(self, rid: str, shown: bytes, method: str) -> bool:
        """Whether a message about `rid` shows its grant's signature (always, when grants
        are not enforced); a message that does not is ignored and counted."""
        req = self.reqs.get(rid)
        if not self.enforce_grants or (
            req is not None and same_signature(req.submit.capability.signature, shown)
        ):
            return True
        self.on_denied(method, "", f"request {rid}: the message does not show its grant")
        return False

    def granted(self, rids, signatures, tombstone: bool = True) -> list[str]:
        """Of a Release's ids, those it may free: each shows its request's grant, or names
        a request this node does not hold (with `tombstone`, remembered under that
        signature, so that only a chunk with the same grant is dropped for it)."""
        ok = []
        for rid in rids:
            shown = signatures.get(rid, b"")
            if rid not in self.reqs:
                if tombstone:
                    self.released[rid] = shown
                    ok.append(rid)
            elif self._shows_grant(rid, shown, "release"):
                ok.append(rid)
        return ok

    def free_kv(self, preempted: dict[str, int]) -> None:
        """The first hop preempted these requests: their KV here is stale until the
        re-prefill, so it is freed now for others. The requests (and the last hop's
        sampling state) stay. An entry whose re-prefill already ran here (it came by
        way of the hops in between, which may overtake this message) is ignored."""
        for rid, times in preempted.items():
            req = self.reqs.get(rid)
            if req is None or req.restarted >= times:
                continue
            if self.kv.has(rid):
                self.kv.free(rid)
                req.awaiting_reprefill = True
                self.freed_early += 1

    def release(self, request_ids) -> None:
        for rid in request_ids:
            req = self.reqs.get(rid)
            if req is not None and req.seq is not None:
                self.scheduler.finish(req.seq)
            self.forget(rid)
        drop = set(request_ids)
        self.incoming = deque(
            (cs, h) for cs, h in self.incoming if not any(c.request_id in drop for c in cs)
        )

    def forget(self, rid: str) -> None:
        """Drop everything this node holds for `rid`: its record and its KV."""
        req = self.reqs.get(rid)
        self.released[rid] = req.submit.capability.signature if req else self.released.get(rid, b"")
        while len(self.released) > 10_000:
            self.released.popitem(last=False)
        self.kv.free(rid)
        self.reqs.pop(rid, None)

    def has_work(self) -> bool:
        return bool(self.incoming) or self.scheduler.has_work()

    # ---- one step ----
    def step(self) -> Outbox:
        out = Outbox()
        work: dict[LayerRange, list[tuple[Chunk, torch.Tensor | None]]] = defaultdict(list)
        for chunk in self.scheduler.schedule(self._micro_batch()):
            work[self.reqs[chunk.request_id].layers].append((chunk, None))
        for rid in self.scheduler.preempted:
            req = self.reqs[rid]
            req.preempted += 1
            for h in req.hops[1:]:
                out.frees[h.address].kv_only[rid] = req.preempted
                out.frees[h.address].grant_signatures[rid] = req.submit.capability.signature
        self.scheduler.preempted.clear()
        for chunks, hidden in self._take_incoming():
            row = 0
            for c in chunks:
                rows = hidden[row : row + c.num_tokens]
                row += c.num_tokens
                if c.request_id not in self.reqs:  # released meanwhile: skip
                    continue
                items = work[self.reqs[c.request_id].layers]
                if c.start_pos == 0 and c.HasField("request"):
                    self._restart(c.request_id, items)
                chunk = Chunk(c.request_id, c.start_pos, c.num_tokens, c.sample)
                items.append((chunk, rows))
        groups = []
        for layers, items in work.items():
            out.ran += len(items)
            if ok := self._admit(items, out):
                groups.append((layers, ok))
        if not groups:
            return out
        # One pass over the layers for every group: requests cut at different layers
        # share each layer's weight reads instead of running it once per group.
        results = self.runner.run_groups(
            [
                (
                    [c for c, _ in ok],
                    None if layers.start == 0 else torch.cat([r for _, r in ok]),
                    layers,
                )
                for layers, ok in groups
            ]
        )
        for (layers, ok), result in zip(groups, results, strict=True):
            chunks = [c for c, _ in ok]
            if layers.end == self.spec.num_layers:
                self._sample(chunks, result, out)
            else:
                self._forward(chunks, result, out)
        return out

    def _take_incoming(self) -> list[tuple[list[pb.SeqChunk], torch.Tensor]]:
        """Arrived messages for this step, up to the step's token budget (at least one):
        a slow step finds many queued, and running them all at once would make one
        step, and the message it forwards, as large as the whole backlog."""
        taken, rows = [], 0
        while self.incoming:
            n = sum(c.num_tokens for c in self.incoming[0][0])
            if taken and rows + n > self.max_batch_tokens:
                break
            taken.append(self.incoming.popleft())
            rows += n
        return taken

    def _restart(self, rid: str, items: list) -> None:
        """A fresh first chunk of a request this hop already holds: the first hop
        preempted it and re-prefills it from position 0 (prompt plus the tokens so far).
        Drop its old KV, and its older chunks not yet run, and take it from the top.

        The sampler stays: the re-prefill ends by sampling the token that follows those
        already generated, so its history, seed state and token index carry on.
        """
        req = self.reqs[rid]
        stale = [i for i, (c, _) in enumerate(items) if c.request_id == rid]
        if not self.kv.has(rid) and not stale and not req.awaiting_reprefill:
            return  # its very first chunk
        req.awaiting_reprefill = False
        req.restarted += 1
        for i in reversed(stale):
            del items[i]
        self.kv.free(rid)
        self.restarts += 1
        log.info("request re-prefilled by the first hop", extra={"request_id": rid})

    def _micro_batch(self) -> int | None:
        """Decodes per step on a first hop: the running requests split over the stages."""
        running = self.scheduler.running
        stages = max((len(self.reqs[s.request_id].hops) for s in running), default=1)
        parts = stages if self.micro_batches == 0 else self.micro_batches
        if parts <= 1:
            return None
        return max(1, -(-len(running) // parts))

    def _admit(self, items, out: Outbox) -> list:
        """The items that may run: each arriving chunk reserves its KV (scheduled ones
        did already); a chunk that cannot fails its request."""
        ok = []
        for chunk, rows in items:
            if chunk.request_id not in self.reqs:  # failed by an earlier chunk of this step
                continue
            try:
                if rows is not None:
                    self.runner.check(chunk)
                ok.append((chunk, rows))
            except CapacityError as e:
                # Only the first hop can preempt (it holds the tokens to recompute from);
                # a downstream hop out of KV fails the request, and the gateway replays it.
                why = f"{e}; a downstream hop cannot recompute it, so the gateway must replay it"
                self.fail(chunk.request_id, FailureKind.KV_FULL, why, out)
            except ParallaxError as e:
                self.fail(chunk.request_id, FailureKind.of(e), str(e), out)
        # A failed request's earlier chunks of this step must not run: its KV is freed.
        return [(c, r) for c, r in ok if c.request_id in self.reqs]

    def _forward(self, chunks: list[Chunk], hidden: torch.Tensor, out: Outbox) -> None:
        by_next: dict[str, list[tuple[Chunk, torch.Tensor]]] = defaultdict(list)
        row = 0
        for c in chunks:
            by_next[self.reqs[c.request_id].next_address].append((c, hidden[row : row + c.n]))
            row += c.n
        for addr, all_items in by_next.items():
            for items in split_rows(all_items, MAX_FORWARD_ROWS):
                out.forwards[addr].append(self._forward_message(items))

    def _forward_message(self, items: list[tuple[Chunk, torch.Tensor]]) -> pb.ForwardRequest:
        msg = pb.ForwardRequest(sender_id=self.node_id)
        for c, _ in items:
            submit = self.reqs[c.request_id].submit
            sc = msg.chunks.add(
                request_id=c.request_id,
                start_pos=c.start,
                num_tokens=c.n,
                sample=c.sample,
                grant_signature=submit.capability.signature,
            )
            if c.start == 0:  # the request's first chunk carries what downstream needs
                sc.request.CopyFrom(submit)
        msg.hidden.CopyFrom(encode_tensor(torch.cat([h for _, h in items]), self.wire_dtype))
        return msg

    def _sample(self, chunks: list[Chunk], logits: torch.Tensor, out: Outbox) -> None:
        reqs, samplers, logits, failed = sampleable(
            chunks, logits, self.reqs, self.eos_ids, self.max_context, self.grammars
        )
        for rid, kind, why in failed:
            self.fail(rid, kind, why, out)
        if not reqs:
            return
        for req, s, res in zip(
            reqs, samplers, sample(logits, samplers, self.vocab_limit), strict=True
        ):
            ev = token_event(req, s, res)
            out.delivers[req.reply_to].events.append(ev)
            if ev.finished:
                self._finish(req.rid, "finished", out)
            elif req.seq is not None:  # this node is the first hop too
                self.scheduler.on_token(req.seq, res.token_id, finished=False)
            else:
                out.pushes[req.first_address].events.append(ev)

    def fail(self, rid: str, kind: FailureKind, why: str, out: Outbox, hop: str = "") -> None:
        log.warning(
            "request failed on this node", extra={"request_id": rid, "failure": kind, "error": why}
        )
        req = self.reqs.get(rid)
        if req is not None:
            out.delivers[req.reply_to].events.append(failure_event(rid, kind, why, hop))
        self._finish(rid, "error", out)

    def _finish(self, rid: str, reason: str, out: Outbox) -> None:
        req = self.reqs.get(rid)
        if req is not None:
            self.release_elsewhere(req.submit, reason, out)
        self.release([rid])

    def release_elsewhere(self, submit: pb.SubmitRequest, reason: str, out: Outbox) -> None:
        """Tell every other hop of a request's route to free it."""
        rid = submit.request_id
        for h in submit.route.hops:
            if h.node_id != self.node_id:
                rel = out.releases[h.address]
                rel.request_ids.append(rid)
                rel.grant_signatures[rid] = submit.capability.signature
                rel.reason = reason
