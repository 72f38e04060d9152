"""Round-trip times to the peers the coordinator lists, measured with `Node.Health`.

Probes run in the background so that a slow or vanished peer never delays a
heartbeat; each heartbeat sends the latest results.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc

from parallax.rpc import deadlines
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from parallax.rpc.tls import Tls, open_channel

log = logging.getLogger(__name__)


class RttProber:
    def __init__(self, tls: Tls | None = None) -> None:
        self._tls = tls
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._rtt_ms: dict[str, float] = {}  # node id -> latest RTT
        self._task: asyncio.Task[None] | None = None

    def results(self) -> list[pb.PeerRtt]:
        return [pb.PeerRtt(node_id=n, rtt_ms=ms) for n, ms in sorted(self._rtt_ms.items())]

    def probe(self, peers: list[pb.Hop]) -> None:
        """Start measuring `peers` unless the previous round is still running."""
        if self._task is not None and not self._task.done():
            return
        self._task = asyncio.create_task(self._round(peers))

    async def _round(self, peers: list[pb.Hop]) -> None:
        wanted = {p.address for p in peers}
        for address in [a for a in self._channels if a not in wanted]:
            await self._channels.pop(address).close()
        results = await asyncio.gather(*(self._measure(p) for p in peers))
        self._rtt_ms = {p.node_id: ms for p, ms in zip(peers, results, strict=True) if ms >= 0}

    async def _measure(self, peer: pb.Hop) -> float:
        """RTT in ms, or -1 when the peer did not answer."""
        channel = self._channels.get(peer.address)
        if channel is None:
            channel = self._channels[peer.address] = open_channel(peer.address, self._tls)
        stub = pb_grpc.NodeStub(channel)
        try:
            # Connect first: the RTT must not include TCP and HTTP/2 setup.
            await asyncio.wait_for(channel.channel_ready(), deadlines.HEALTH_S)
            t0 = time.perf_counter()
            await stub.Health(pb.HealthRequest(), timeout=deadlines.HEALTH_S)
        except TimeoutError:
            return -1.0
        except grpc.aio.AioRpcError as e:
            log.debug("rtt probe failed", extra={"peer": peer.node_id, "error": e.code().name})
            return -1.0
        return (time.perf_counter() - t0) * 1000.0

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
