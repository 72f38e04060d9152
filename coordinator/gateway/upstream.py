"""gRPC calls from the gateway to nodes: cached channels, Submit and Release."""

from __future__ import annotations

import asyncio
import logging

import grpc

from coordinator.gateway.backend import UpstreamError
from coordinator.scheduler.types import Route
from parallax.errors import CapacityError, InvalidArgument
from parallax.rpc import deadlines
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)


def route_to_proto(route: Route) -> pb.Route:
    return pb.Route(
        hops=[
            pb.Hop(node_id=h.node_id, address=h.address, start=h.range.start, end=h.range.end)
            for h in route.hops
        ]
    )


class NodeClients:
    """One channel per node address, opened on first use and kept until `close`."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, pb_grpc.NodeStub] = {}

    def stub(self, address: str) -> pb_grpc.NodeStub:
        stub = self._stubs.get(address)
        if stub is None:
            channel = grpc.aio.insecure_channel(address)
            self._channels[address] = channel
            stub = self._stubs[address] = pb_grpc.NodeStub(channel)
        return stub

    async def submit(self, route: Route, request: pb.SubmitRequest) -> None:
        """Hand a request to the first hop; raises the typed error the HTTP layer maps."""
        first = route.hops[0]
        try:
            ack = await self.stub(first.address).Submit(request, timeout=deadlines.SUBMIT_S)
        except grpc.aio.AioRpcError as e:
            code, detail = e.code(), e.details() or ""
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise CapacityError(f"node {first.node_id} is full: {detail}") from None
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidArgument(detail) from None
            raise UpstreamError(
                f"first node {first.node_id} ({first.address}) did not take the request: "
                f"{code.name} {detail}"
            ) from None
        if not ack.ok:
            raise UpstreamError(f"first node {first.node_id} refused the request: {ack.message}")

    async def release(self, route: Route, request_id: str, reason: str) -> None:
        """Free the request's KV on every hop at once; failures are logged, not raised."""
        msg = pb.ReleaseRequest(request_ids=[request_id], reason=reason)
        calls = [self.stub(h.address).Release(msg, timeout=deadlines.RELEASE_S) for h in route.hops]
        results = await asyncio.gather(*calls, return_exceptions=True)
        for hop, res in zip(route.hops, results, strict=True):
            if isinstance(res, BaseException):
                log.warning(
                    "release failed",
                    extra={
                        "request_id": request_id,
                        "node_id": hop.node_id,
                        "error": type(res).__name__,
                    },
                )

    async def close(self) -> None:
        channels, self._channels, self._stubs = list(self._channels.values()), {}, {}
        await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)
