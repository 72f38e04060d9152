"""`Gateway.Deliver`: token events from last nodes, dispatched to waiting requests."""

from __future__ import annotations

import asyncio
import logging

import grpc

from coordinator.gateway.backend import FINISH_REASONS, TokenOut
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)


def event_to_token(ev: pb.TokenEvent, with_logprobs: bool) -> TokenOut:
    """`with_logprobs`: the request asked for them (proto3 cannot tell 0.0 from unset)."""
    reason: str | None = ev.finish_reason or None
    error = ev.error or None
    if ev.finished and reason not in FINISH_REASONS:
        reason, error = "error", f"node finished the request with reason {ev.finish_reason!r}"
    if not ev.finished:
        reason, error = None, None
    return TokenOut(
        token_id=ev.token_id,
        logprob=ev.logprob if with_logprobs else None,
        top_logprobs=tuple((t.token_id, t.logprob) for t in ev.top_logprobs),
        finished=ev.finished,
        finish_reason=reason,
        error=error,
    )


class DeliveryBoard:
    """request id -> the queue its `generate` reads. Thread-safe across event loops."""

    def __init__(self) -> None:
        self._queues: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue[pb.TokenEvent]]] = {}

    def open(self, request_id: str) -> asyncio.Queue[pb.TokenEvent]:
        queue: asyncio.Queue[pb.TokenEvent] = asyncio.Queue()
        self._queues[request_id] = (asyncio.get_running_loop(), queue)
        return queue

    def close(self, request_id: str) -> None:
        self._queues.pop(request_id, None)

    def post(self, ev: pb.TokenEvent) -> bool:
        entry = self._queues.get(ev.request_id)
        if entry is None:
            return False
        loop, queue = entry
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            queue.put_nowait(ev)
        else:
            loop.call_soon_threadsafe(queue.put_nowait, ev)
        return True

    def __len__(self) -> int:
        return len(self._queues)


class DeliverServicer(pb_grpc.GatewayServicer):
    def __init__(self, board: DeliveryBoard) -> None:
        self._board = board

    async def Deliver(self, request: pb.TokenBatch, context: grpc.aio.ServicerContext) -> pb.Ack:
        dropped = [ev.request_id for ev in request.events if not self._board.post(ev)]
        if dropped:
            # Normal after an abort: the last node may still be sending.
            log.debug(
                "tokens for unknown requests dropped",
                extra={"sender_id": request.sender_id, "request_ids": sorted(set(dropped))},
            )
        return pb.Ack(ok=True)
