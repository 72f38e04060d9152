"""Outbound RPCs to other nodes and gateways: cached channels, one ordered queue per peer.

Messages to one peer are sent in order (a request's chunks must arrive in
sequence), and a slow peer never blocks the engine loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc

from parallax.rpc import deadlines
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from parallax.rpc.tls import Tls, open_channel

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 256 * 2**20
CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)

# A peer nothing was sent to for this long loses its channel and sender task.
PEER_IDLE_S = 300.0

# kind -> (stub class, method name, deadline)
KINDS = {
    "forward": (pb_grpc.NodeStub, "Forward", deadlines.FORWARD_S),
    "push": (pb_grpc.NodeStub, "PushTokens", deadlines.PUSH_TOKENS_S),
    "release": (pb_grpc.NodeStub, "Release", deadlines.RELEASE_S),
    "deliver": (pb_grpc.GatewayStub, "Deliver", deadlines.DELIVER_S),
}


class Peers:
    def __init__(
        self,
        on_failure: Callable[[str, str, object, Exception], None],
        on_sent: Callable[[str, float, bool], None] | None = None,
        tls: Tls | None = None,
        idle_s: float = PEER_IDLE_S,
    ):
        # on_sent(kind, seconds, ok) after each RPC: the per-hop latency metric.
        self._on_sent = on_sent
        self._tls = tls
        self._idle_s = idle_s
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._queues: dict[str, asyncio.Queue] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._on_failure = on_failure

    def channel(self, address: str) -> grpc.aio.Channel:
        ch = self._channels.get(address)
        if ch is None:
            ch = open_channel(address, self._tls, CHANNEL_OPTIONS)
            self._channels[address] = ch
        return ch

    @property
    def addresses(self) -> list[str]:
        """Peers with a live sender (and channel)."""
        return list(self._queues)

    def send(self, address: str, kind: str, message) -> None:
        q = self._queues.get(address)
        if q is None:
            q = self._queues[address] = asyncio.Queue()
            self._tasks[address] = asyncio.create_task(self._drain(address, q))
        q.put_nowait((kind, message))

    async def _drain(self, address: str, q: asyncio.Queue) -> None:
        stubs = {}
        while True:
            try:
                kind, message = await asyncio.wait_for(q.get(), self._idle_s)
            except TimeoutError:
                if not q.empty():
                    continue
                # Idle: forget the peer. Gateways and nodes come and go, and a node that
                # runs for weeks must not keep a channel and a task for every address it
                # ever answered. No await since the queue was seen empty, so a send
                # cannot slip in: the next one starts afresh.
                del self._queues[address], self._tasks[address]
                channel = self._channels.pop(address, None)
                if channel is not None:
                    await channel.close()
                return
            stub_cls, method, deadline = KINDS[kind]
            stub = stubs.get(stub_cls)
            if stub is None:
                stub = stubs[stub_cls] = stub_cls(self.channel(address))
            t0 = time.perf_counter()
            try:
                await getattr(stub, method)(message, timeout=deadline)
                if self._on_sent is not None:
                    self._on_sent(kind, time.perf_counter() - t0, True)
            except grpc.aio.AioRpcError as e:
                if self._on_sent is not None:
                    self._on_sent(kind, time.perf_counter() - t0, False)
                log.warning(
                    "send failed",
                    extra={"peer": address, "kind": kind, "code": e.code().name},
                )
                self._on_failure(address, kind, message, e)

    async def close(self) -> None:
        for t in self._tasks.values():
            t.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        for ch in self._channels.values():
            await ch.close()
