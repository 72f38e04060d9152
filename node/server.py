"""The shard server: gRPC handlers feed an inbox; one loop applies it and steps the engine.

Only the loop touches the pipeline, so handlers never race with a running step:
they validate what they can, queue the operation, and return at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import grpc

from node import inbox
from node.engine.engine import DTYPES, compute_dtype, make_runner
from node.grammar import Grammars
from node.metrics import NodeMetrics
from node.outbox import Outbox
from node.peers import CHANNEL_OPTIONS, Peers
from node.pipeline import NodePipeline
from node.step_stats import StepStats
from node.weights import load_shard_model
from parallax.config.generate import EngineConfig
from parallax.errors import ParallaxError, PermissionDenied, StaleRoute
from parallax.failures import FailureKind, failure_event
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from parallax.rpc.grants import RouteVerifier, event_mac
from parallax.rpc.tls import Tls, add_port
from parallax.types import LayerRange
from parallax.wire.codec import decode_tensor
from parallax.wire.limits import MAX_FORWARD_ROWS

log = logging.getLogger(__name__)


class NodeServer(pb_grpc.NodeServicer):
    def __init__(
        self, cfg: EngineConfig, name: str = "", wire_dtype: str = "", tls: Tls | None = None
    ):
        self.cfg, self.name, self.tls = cfg, name, tls
        self.resolved = self.spec = None
        self.vocab_limit: int | None = None
        self.eos_ids: tuple[int, ...] = ()
        self.grammars: Grammars | None = None
        self.dtype = compute_dtype(cfg)
        self.wire_dtype = DTYPES[wire_dtype] if wire_dtype else None
        self.node_id = ""
        # Set at join: without them (an in-process node in tests) nothing is checked.
        self.node_secret = b""  # MACs what this node Delivers
        self.verifier: RouteVerifier | None = None  # checks the gateway's route grants
        self.state = "joining"
        self.draining = False  # leaving: no new requests, those in flight run out
        self.pipeline: NodePipeline | None = None
        self.inbox: deque[inbox.InboxMessage] = deque()
        self.wake = asyncio.Event()
        self._stepping = asyncio.Lock()  # held while an engine step runs in its thread
        self.metrics = NodeMetrics()
        self._denied_seen: set[tuple[str, str]] = set()
        self.peers = Peers(self._send_failed, on_sent=self.metrics.on_sent, tls=tls)
        self.max_bytes = 0
        self.stats = StepStats()
        self._loop_task: asyncio.Task | None = None
        self.server: grpc.aio.Server | None = None
        self.port = 0

    def set_identity(self, node_id: str, secret: bytes, route_key: bytes) -> None:
        """Who this node is (from its JoinReply): its id, its secret, and the key that
        signs the route grants it must be shown."""
        self.node_id, self.node_secret = node_id, secret
        self.verifier = RouteVerifier(route_key) if route_key else None
        if self.pipeline is not None:
            self.pipeline.node_id = node_id
            self.pipeline.enforce_grants = self.verifier is not None

    def set_model(self, resolved, eos_ids, vocab_limit: int | None = None) -> None:
        """The model comes from the coordinator's join reply, after the server started."""
        self.resolved, self.spec, self.eos_ids = resolved, resolved.spec, tuple(eos_ids)
        self.vocab_limit = vocab_limit
        self.grammars = Grammars.for_model(resolved)  # built on the first constrained request
        # Largest legal Forward: the protocol's row cap in fp32, whatever this node's
        # own step budget (peers may run larger steps; they split what they send).
        self.max_bytes = MAX_FORWARD_ROWS * self.spec.hidden_size * 4

    # ---- lifecycle ----
    async def start(
        self, host: str, port: int, weights: pb_grpc.WeightsServicer | None = None
    ) -> int:
        self.server = grpc.aio.server(options=CHANNEL_OPTIONS)
        pb_grpc.add_NodeServicer_to_server(self, self.server)
        if weights is not None:  # serves the weight chunks this node holds to peers
            pb_grpc.add_WeightsServicer_to_server(weights, self.server)
        self.port = add_port(self.server, f"{host}:{port}", self.tls)
        if self.port == 0:
            raise ParallaxError(f"cannot bind the node's gRPC server to {host}:{port}: in use?")
        await self.server.start()
        self._loop_task = asyncio.create_task(self._loop())
        return self.port

    def start_metrics(self, host: str, port: int) -> int:
        """Serve Prometheus `/metrics` on its own small HTTP port; returns the port."""
        return self.metrics.serve(host, port)

    async def stop(self) -> None:
        self.metrics.close()
        if self._loop_task:
            self._loop_task.cancel()
        if self.server:
            await self.server.stop(grace=1.0)
        await self.peers.close()

    async def load(self, layers: LayerRange | None) -> None:
        """Serve `layers` (None = standby). Requests on the old range are failed."""
        current = self.pipeline.runner.model.range if self.pipeline else None
        if layers == current:
            self.state = "ready" if layers else "standby"
            return
        self.state = "loading"
        old, self.pipeline = self.pipeline, None
        if old is not None:
            # A step may still run on the old pipeline in its thread: fail its requests
            # (freeing their KV) only once that step is over.
            async with self._stepping:
                self._fail_all(old, FailureKind.REASSIGNED, "the node was reassigned")
        self._refuse_inbox(FailureKind.REASSIGNED, "the node was reassigned")
        if layers is None:
            self.state = "standby"
            return
        log.info("loading layers", extra={"start": layers.start, "end": layers.end})
        # Load only what we lack: layers we already hold are taken from the old shard,
        # whose remaining tensors are released when `old` goes out of scope.
        model = await asyncio.to_thread(
            load_shard_model,
            self.resolved,
            layers,
            self.dtype,
            self.cfg.device,
            reuse=old.runner.model if old is not None else None,
            weights=self.cfg.weights,
        )
        del old
        runner = make_runner(model, self.cfg)
        args = (self.eos_ids, self.wire_dtype, self.vocab_limit, self.grammars)
        self.pipeline = NodePipeline(self.node_id, runner, self.cfg, *args)
        self.pipeline.enforce_grants = self.verifier is not None
        self.pipeline.on_denied = self._denied
        self.state = "ready"
        log.info("layers ready", extra={"start": layers.start, "end": layers.end})

    async def drain(self, drain_s: float) -> int:
        """Take no new requests; let those in flight run to their end for up to
        `drain_s`, then hand back the rest (their gateways replay them elsewhere).
        Returns how many were handed back."""
        self.draining, self.state = True, "leaving"
        deadline = time.monotonic() + drain_s
        while self._busy() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        pipe = self.pipeline
        if pipe is None or not self._busy():
            return 0
        async with self._stepping:  # never under a running step (see `load`)
            left = len(pipe.reqs)
            self._fail_all(pipe, FailureKind.DRAINING, f"node {self.node_id} is leaving")
        self._refuse_inbox(FailureKind.DRAINING, f"node {self.node_id} is leaving")
        return left

    def _busy(self) -> bool:
        return bool(self.inbox) or (self.pipeline is not None and bool(self.pipeline.reqs))

    # ---- the loop ----
    async def _loop(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            pipe = self.pipeline
            if pipe is None:
                why = f"node {self.node_id} serves no layers now"
                self._refuse_inbox(FailureKind.REASSIGNED, why)
                continue
            out = Outbox()
            self._apply_inbox(pipe, out)
            progressed = False
            if pipe.has_work():
                t0 = time.perf_counter()
                try:
                    async with self._stepping:
                        step_out = await asyncio.to_thread(pipe.step)
                except Exception:
                    # A bug must not leave a node that takes work and never answers: fail
                    # what it holds (the gateway replays it) and keep serving.
                    log.exception("engine step failed; failing this node's requests")
                    self._send(out)
                    why = f"internal error: the engine step failed on node {self.node_id}"
                    self._fail_all(pipe, FailureKind.INTERNAL, why)
                    continue
                progressed = step_out.ran > 0
                if progressed:  # an empty step would drag the reported layer time to 0
                    self._account(pipe, time.perf_counter() - t0, step_out)
                out.merge(step_out)
            self._send(out)
            # Work that could not run (KV full, --max-running reached, every request
            # awaiting its token) waits for the next message, which is what can unblock
            # it: stepping again at once would spin a core until tokens come back.
            if (progressed and pipe.has_work()) or self.inbox:
                self.wake.set()

    def _apply_inbox(self, pipe: NodePipeline, out: Outbox) -> None:
        while self.inbox:
            msg = self.inbox.popleft()
            try:
                msg.apply(pipe, out)
            except ParallaxError as e:
                log.warning("operation rejected", extra={"op": msg.op, "error": str(e)})
                self._answer(pipe, msg, FailureKind.of(e), str(e), out)
            except Exception:
                # A bug in handling one message must not end the loop (a node that takes
                # work and never answers): fail the requests it concerns, keep serving.
                log.exception("operation failed", extra={"op": msg.op})
                why = f"internal error on node {self.node_id} while handling {msg.op}"
                self._answer(pipe, msg, FailureKind.INTERNAL, why, out)

    def _answer(
        self, pipe: NodePipeline, msg: inbox.InboxMessage, kind: FailureKind, why: str, out: Outbox
    ) -> None:
        """A message failed: the requests it concerns end with `kind`. Those this node
        never registered are told from what the message carries (their gateway replays
        them, and the other hops are told to free them)."""
        for rid in msg.request_ids():
            if rid in pipe.reqs:
                pipe.fail(rid, kind, why, out)
        for submit in msg.carried():
            if submit.request_id not in pipe.reqs:
                self._refuse(submit, kind, why, out)
                if msg.op == "forward":
                    pipe.release_elsewhere(submit, "error", out)

    def _refuse_inbox(self, kind: FailureKind, why: str) -> None:
        """Work queued for a pipeline that is gone is answered, never dropped: a request
        not yet taken gets an error event, and its gateway replays it."""
        out = Outbox()
        while self.inbox:
            for submit in self.inbox.popleft().carried():
                self._refuse(submit, kind, why, out)
        self._send(out)

    def _refuse(self, submit: pb.SubmitRequest, kind: FailureKind, why: str, out: Outbox) -> None:
        out.delivers[submit.reply_to].events.append(failure_event(submit.request_id, kind, why))

    def _send(self, out: Outbox) -> None:
        for addr, batch in out.delivers.items():
            batch.sender_id = self.node_id
            if self.node_secret:  # the gateway takes tokens only from the last hop
                for ev in batch.events:
                    ev.mac = event_mac(self.node_secret, ev)
            self.peers.send(addr, "deliver", batch)
        for addr, msgs in out.forwards.items():
            for msg in msgs:
                self.peers.send(addr, "forward", msg)
        for addr, batch in out.pushes.items():
            batch.sender_id = self.node_id
            self.peers.send(addr, "push", batch)
        for addr, rel in out.frees.items():  # before releases: a request may end here too
            self.peers.send(addr, "release", rel)
        for addr, rel in out.releases.items():
            self.peers.send(addr, "release", rel)

    def _account(self, pipe: NodePipeline, seconds: float, out: Outbox) -> None:
        sampled = sum(len(b.events) for b in out.delivers.values())
        forwarded = sum(len(m.chunks) for ms in out.forwards.values() for m in ms)
        depth = len(self.inbox) + len(pipe.incoming) + len(pipe.scheduler.waiting)
        self.metrics.on_step(seconds, sampled, forwarded, depth)
        self.stats.on_step(seconds, len(pipe.runner.model.range), sampled + forwarded)

    def _fail_all(self, pipe: NodePipeline, kind: FailureKind, why: str) -> None:
        out = Outbox()
        for rid in list(pipe.reqs):
            pipe.fail(rid, kind, why, out)
        self._send(out)

    def _send_failed(self, address: str, kind: str, message, error: Exception) -> None:
        """A hop is unreachable: fail the requests whose data was lost."""
        # A lost push means the first hop is gone: its requests cannot go on either.
        if kind not in ("forward", "push"):
            return
        why = f"hop {address} unreachable: {error.code().name}"
        # Through the inbox, like every RPC: an engine step may be running in its thread,
        # and freeing a request's KV under it would fail the whole step.
        self.inbox.append(inbox.Lost(inbox.request_ids_of(message), why, address))
        self.wake.set()

    # ---- RPC handlers ----
    def _queue(self, msg: inbox.InboxMessage) -> pb.Ack:
        self.metrics.received.labels(method=msg.op).inc()
        self.inbox.append(msg)
        self.wake.set()
        return pb.Ack(ok=True)

    async def _ready(self, context) -> NodePipeline:
        if self.pipeline is None:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"node is {self.state}; it serves no layers yet"
            )
        return self.pipeline

    async def Submit(self, request, context):
        if self.draining:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"node {self.node_id} is leaving; route elsewhere"
            )
        pipe = await self._ready(context)
        waiting = len(pipe.scheduler.waiting) + sum(m.op == "submit" for m in self.inbox)
        if waiting >= self.cfg.max_waiting:
            # Bounded: a burst waits at the gateway (fair across clients), not here.
            context.set_trailing_metadata((("retry-after-s", "1"),))
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"node {self.node_id} has {waiting} requests waiting (--max-waiting); retry",
            )
        try:
            if self.verifier is not None:  # first: a stranger learns nothing more
                self.verifier.verify(request)
            pipe.check_submit(request)
        except PermissionDenied as e:
            await self._deny(context, "submit", str(e))
        except StaleRoute as e:  # the node moved since the route was chosen: route again
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        except (ParallaxError, ValueError) as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        return self._queue(inbox.Submit(request))

    async def Forward(self, request, context):
        await self._ready(context)
        try:
            rows = sum(c.num_tokens for c in request.chunks)
            if any(c.num_tokens <= 0 or c.start_pos < 0 for c in request.chunks):
                raise ParallaxError("every chunk needs num_tokens > 0 and start_pos >= 0")
            if self.verifier is not None:  # a request is taken only with its grant
                for c in request.chunks:
                    if c.HasField("request"):
                        self.verifier.verify(c.request)
            hidden = decode_tensor(
                request.hidden,
                hidden_size=self.spec.hidden_size,
                rows=rows,
                max_bytes=self.max_bytes,
                out_dtype=self.dtype,
            )
        except PermissionDenied as e:
            await self._deny(context, "forward", str(e))
        except (ParallaxError, ValueError) as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        return self._queue(inbox.Forward(request, hidden))

    async def PushTokens(self, request, context):
        await self._ready(context)
        vocab = self.spec.vocab_size
        bad = [ev.token_id for ev in request.events if not 0 <= ev.token_id < vocab]
        if bad:
            # The next decode step would embed it and fail every request on this node.
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"token ids {bad[:5]} are outside the vocabulary [0, {vocab})",
            )
        return self._queue(inbox.Tokens(request))

    async def Release(self, request, context):
        return self._queue(inbox.Release(request))

    async def _deny(self, context, method: str, why: str) -> None:
        self._denied(method, context.peer(), why)
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, why)

    def _denied(self, method: str, peer: str, why: str) -> None:
        """Count a refused call or chunk; log it once per peer and method."""
        self.metrics.denied.labels(method=method).inc()
        key = (peer.rsplit(":", 1)[0], method)
        if key not in self._denied_seen and len(self._denied_seen) < 1024:
            self._denied_seen.add(key)
            log.warning("permission denied", extra={"peer": key[0], "method": method, "error": why})

    async def Health(self, request, context):
        return self.status()

    def status(self) -> pb.NodeStatus:
        st = pb.NodeStatus(node_id=self.node_id, name=self.name, state=self.state)
        st.model = self.resolved.name if self.resolved else ""
        if self.pipeline is not None:
            p = self.pipeline
            st.start, st.end = p.runner.model.range.start, p.runner.model.range.end
            st.running_requests = len(p.kv.requests()) + len(p.scheduler.waiting)
            st.kv_free_tokens = p.kv.free_tokens
            st.kv_total_tokens = p.kv.total_tokens
            st.max_running = self.cfg.max_running
            st.kv_block_tokens = p.kv.block_size
        st.layer_latency_ms = self.stats.layer_ms
        st.tokens_per_s = self.stats.tokens_per_s
        self.metrics.on_status(st)
        return st
