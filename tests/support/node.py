"""Real NodeServers on loopback gRPC beside a collecting gateway: one node, or a whole
chain fed prompts and run until every node is idle again."""

from __future__ import annotations

import random
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc
import torch

from node.engine.kv_cache import kv_bytes_per_block
from node.server import NodeServer
from parallax.config.generate import EngineConfig
from parallax.models.registry import resolve_model
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from parallax.types import LayerRange
from tests.support.wait import wait_for

BLOCK = 4  # tokens per KV block: small, so KV runs out often
MAX_TOKENS = 20
BIG_KV = {"kv_cache_mb": 8.0, "kv_block_size": BLOCK, "max_batch_tokens": 16}


def prompts(n: int, seed: int = 7) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, 256) for _ in range(rng.randrange(6, 24))] for _ in range(n)]


def kv_mb(path, num_layers: int, blocks: int) -> float:
    spec = resolve_model(str(path)).spec
    return blocks * kv_bytes_per_block(spec, num_layers, BLOCK, torch.float32) / 2**20


@dataclass
class Collector(pb_grpc.GatewayServicer):
    """The gateway's Deliver side: every event per request, in arrival order."""

    events: dict[str, list[pb.TokenEvent]] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)

    async def Deliver(self, request, context):
        for ev in request.events:
            self.events.setdefault(ev.request_id, []).append(ev)
            if ev.finished:
                self.done.add(ev.request_id)
        return pb.Ack(ok=True)


@asynccontextmanager
async def collecting_gateway():
    """A gRPC server with the gateway's Deliver side: (collector, its reply_to address)."""
    gateway = grpc.aio.server()
    collector = Collector()
    pb_grpc.add_GatewayServicer_to_server(collector, gateway)
    reply_to = f"127.0.0.1:{gateway.add_insecure_port('127.0.0.1:0')}"
    await gateway.start()
    try:
        yield collector, reply_to
    finally:
        await gateway.stop(None)


@asynccontextmanager
async def serving_node(path, name: str, layers: LayerRange):
    """A real NodeServer on loopback serving `layers` of the model at `path`, beside a
    collecting gateway: (node, its address, collector, reply_to)."""
    resolved = resolve_model(str(path))
    node = NodeServer(EngineConfig(**BIG_KV), name=name)
    async with collecting_gateway() as (collector, reply_to):
        try:
            address = f"127.0.0.1:{await node.start('127.0.0.1', 0)}"
            node.node_id = name
            node.set_model(resolved, resolved.spec.eos_token_ids)
            await node.load(layers)
            yield node, address, collector, reply_to
        finally:
            await node.stop()


async def submit_all(address: str, ps, params, reply_to: str, route_of) -> None:
    """Submit every prompt to the node at `address` at once: prompt i as request "r{i}"
    on route `route_of(i)`, its events to `reply_to`."""
    async with grpc.aio.insecure_channel(address) as ch:
        stub = pb_grpc.NodeStub(ch)
        for i, p in enumerate(ps):
            req = pb.SubmitRequest(
                request_id=f"r{i}",
                prompt_ids=p,
                sampling=params.to_proto(),
                route=route_of(i),
                reply_to=reply_to,
            )
            await stub.Submit(req, timeout=5)


async def run_chain(path, cuts: list[int], cfgs: list[dict], ps, params, setup=None):
    """Serve `path` split at `cuts` (one NodeServer per shard, configs `cfgs`), submit
    every prompt at once to the first node, and return (collector, servers) once every
    request finished and every node holds no KV and no request state. `setup(servers)`
    runs once the layers are loaded."""
    resolved = resolve_model(str(path))
    bounds = [0, *cuts, resolved.spec.num_layers]
    servers: list[NodeServer] = []
    async with collecting_gateway() as (collector, reply_to):
        try:
            route = pb.Route()
            for i, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
                s = NodeServer(EngineConfig(**cfgs[i]), name=f"n{i}")
                servers.append(s)
                port = await s.start("127.0.0.1", 0)
                s.node_id = f"n{i}"
                s.set_model(resolved, resolved.spec.eos_token_ids)
                await s.load(LayerRange(a, b))
                route.hops.add(node_id=s.node_id, address=f"127.0.0.1:{port}", start=a, end=b)
            if setup is not None:
                setup(servers)
            await submit_all(route.hops[0].address, ps, params, reply_to, lambda _: route)
            await wait_for(lambda: len(collector.done) == len(ps), 30, "every request to finish")

            def idle() -> bool:
                return all(
                    s.pipeline.kv.free_blocks == s.pipeline.kv.num_blocks
                    and not s.pipeline.reqs
                    and not s.pipeline.scheduler.has_work()
                    for s in servers
                )

            await wait_for(idle, 10, "every node to free the requests' KV")
            for s in servers:
                s.pipeline.kv.check_invariants()
                assert s._loop_task is not None and not s._loop_task.done(), "a node loop died"
            return collector, servers
        finally:
            for s in servers:
                await s.stop()


def tokens_of(collector: Collector, rid: str) -> list[int]:
    evs = collector.events[rid]
    assert [e.index for e in evs] == list(range(len(evs))), "a token was skipped or repeated"
    assert all(not e.error for e in evs), evs[-1].error
    assert evs[-1].finished and sum(e.finished for e in evs) == 1
    return [e.token_id for e in evs]
