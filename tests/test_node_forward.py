"""A Forward message carries chunks of many requests: one it cannot take is dropped
alone, with a clear error to its gateway, and the others go on (they must not stall).

A real NodeServer on loopback gRPC, sent a crafted Forward as a previous hop would.
"""

from __future__ import annotations

import asyncio

import grpc
import torch

from node.server import NodeServer
from parallax.config.generate import EngineConfig
from parallax.models.registry import resolve_model
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from parallax.sampling import SamplingParams
from parallax.types import LayerRange
from parallax.wire.codec import encode_tensor
from tests.test_pipeline_preemption import BIG_KV, Collector, wait_for

PREVIOUS_HOP = "127.0.0.1:1"  # never dialled: every request here finishes at this node


def request(rid: str, reply_to: str, node: str, cut: int) -> pb.SubmitRequest:
    route = pb.Route()
    route.hops.add(node_id="a", address=PREVIOUS_HOP, start=0, end=cut)
    route.hops.add(node_id="b", address=node, start=cut, end=4)
    params = SamplingParams(max_tokens=1, ignore_eos=True)
    return pb.SubmitRequest(
        request_id=rid,
        prompt_ids=[5, 6, 7],
        sampling=params.to_proto(),
        route=route,
        reply_to=reply_to,
    )


async def send_mixed(path) -> Collector:
    resolved = resolve_model(str(path))
    gateway = grpc.aio.server()
    collector = Collector()
    pb_grpc.add_GatewayServicer_to_server(collector, gateway)
    reply_to = f"127.0.0.1:{gateway.add_insecure_port('127.0.0.1:0')}"
    await gateway.start()
    node = NodeServer(EngineConfig(**BIG_KV), name="b")
    try:
        address = f"127.0.0.1:{await node.start('127.0.0.1', 0)}"
        node.node_id = "b"
        node.set_model(resolved, resolved.spec.eos_token_ids)
        await node.load(LayerRange(2, 4))
        msg = pb.ForwardRequest(sender_id="a")
        # Cut at layer 1: this node holds [2, 4), so that route is stale here.
        for rid, cut in (("stale", 1), ("good", 2)):
            c = msg.chunks.add(request_id=rid, start_pos=0, num_tokens=3, sample=True)
            c.request.CopyFrom(request(rid, reply_to, address, cut))
        msg.hidden.CopyFrom(encode_tensor(torch.randn(6, resolved.spec.hidden_size)))
        async with grpc.aio.insecure_channel(address) as ch:
            await pb_grpc.NodeStub(ch).Forward(msg, timeout=5)
        await wait_for(lambda: collector.done == {"stale", "good"}, 20, "both requests to end")
        assert node._loop_task is not None and not node._loop_task.done()
        return collector
    finally:
        await node.stop()
        await gateway.stop(None)


def test_a_stale_chunk_fails_alone_and_its_neighbours_run(tiny_models):
    collector = asyncio.run(send_mixed(tiny_models["llama"]))
    (stale,) = collector.events["stale"]
    assert stale.finish_reason == "error" and "route is stale" in stale.error
    (good,) = collector.events["good"]
    assert good.finished and not good.error and good.finish_reason == "length"
