"""KV pressure in a real multi-node chain: in-process NodeServers on loopback gRPC.

The first node of a chain preempts a request when its KV runs out and re-prefills it
from position 0; the downstream hops free its stale KV when told, start that request
over (not fail it), and the last hop keeps its sampling state so the token stream is
unchanged. A
downstream hop that runs out of KV itself cannot recompute a request: it fails that
request with a clear error (the gateway replays it) and keeps serving the others.
"""

from __future__ import annotations

import asyncio
import random
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc
import pytest
import torch

from node.engine.kv_cache import kv_bytes_per_block
from node.server import NodeServer
from parallax.config.generate import EngineConfig
from parallax.models.registry import resolve_model
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from parallax.sampling import SamplingParams
from parallax.types import LayerRange
from tests.engine_helpers import local_engine

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


async def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


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
            async with grpc.aio.insecure_channel(route.hops[0].address) as ch:
                stub = pb_grpc.NodeStub(ch)
                for i, p in enumerate(ps):
                    req = pb.SubmitRequest(
                        request_id=f"r{i}",
                        prompt_ids=p,
                        sampling=params.to_proto(),
                        route=route,
                        reply_to=reply_to,
                    )
                    await stub.Submit(req, timeout=5)
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


@pytest.mark.parametrize("cuts", [[2], [1, 3]], ids=["2-node", "3-node"])
def test_first_node_preemption_keeps_the_stream_of_every_request(tiny_models, cuts):
    path = tiny_models["llama"]
    ps = prompts(6)
    params = SamplingParams(max_tokens=MAX_TOKENS, ignore_eos=True)
    expected = local_engine(path, **BIG_KV).generate(ps, params)
    # The first node holds 14 blocks (56 tokens): enough for the longest request
    # (23 + 20 tokens), far too few for six at once, so decodes preempt others.
    tiny = {**BIG_KV, "kv_cache_mb": kv_mb(path, cuts[0], 14)}
    cfgs = [tiny] + [BIG_KV] * len(cuts)
    collector, servers = asyncio.run(run_chain(path, cuts, cfgs, ps, params))

    first, downstream = servers[0].pipeline, [s.pipeline for s in servers[1:]]
    assert first.kv.num_blocks == 14
    assert first.scheduler.preemptions > 0, "the first node never preempted: the test is vacuous"
    for p in downstream:
        assert p.restarts > 0, "a downstream hop never saw a re-prefill"
        assert p.scheduler.preemptions == 0
    # The first hop told the others to free a preempted request's stale KV at once.
    assert sum(p.freed_early for p in downstream) > 0
    got = [tokens_of(collector, f"r{i}") for i in range(len(ps))]
    assert got == expected
    assert all(collector.events[f"r{i}"][-1].finish_reason == "length" for i in range(len(ps)))


def test_a_bfloat16_chain_equals_the_bfloat16_local_engine(tiny_models):
    # Golden parity in the dtype CPU nodes with BF16 instructions are told to use: the
    # hidden states cross the wire in bfloat16 and every token matches the local run.
    path = tiny_models["llama"]
    ps = prompts(4, seed=9)
    params = SamplingParams(max_tokens=12, ignore_eos=True)
    cfg = {**BIG_KV, "dtype": "bfloat16"}
    expected = local_engine(path, **cfg).generate(ps, params)
    collector, _ = asyncio.run(run_chain(path, [1, 3], [cfg, cfg, cfg], ps, params))
    assert [tokens_of(collector, f"r{i}") for i in range(len(ps))] == expected


def test_a_downstream_hop_out_of_kv_fails_requests_clearly_and_keeps_serving(tiny_models):
    path = tiny_models["llama"]
    ps = prompts(6, seed=11)
    params = SamplingParams(max_tokens=MAX_TOKENS, ignore_eos=True)
    expected = local_engine(path, **BIG_KV).generate(ps, params)
    # The last node holds 14 blocks; the first has room for everyone, so it never
    # preempts and the last hop runs out: it cannot recompute, so it fails requests.
    cfgs = [BIG_KV, {**BIG_KV, "kv_cache_mb": kv_mb(path, 2, 14)}]
    collector, servers = asyncio.run(run_chain(path, [2], cfgs, ps, params))

    assert servers[0].pipeline.scheduler.preemptions == 0
    failed = ok = 0
    for i in range(len(ps)):
        evs = collector.events[f"r{i}"]
        last = evs[-1]
        assert [e.index for e in evs[:-1]] == list(range(len(evs) - 1))
        if last.failure:
            failed += 1
            assert last.failure == pb.FAILURE_KV_FULL and "replay" in last.error, last.error
            # Tokens streamed before the failure are the true prefix.
            assert [e.token_id for e in evs[:-1]] == expected[i][: len(evs) - 1]
        else:
            ok += 1
            assert tokens_of(collector, f"r{i}") == expected[i]
    assert failed > 0, "the last node never ran out of KV: the test is vacuous"
    assert ok > 0


def test_a_failing_step_fails_its_requests_and_the_node_keeps_serving(tiny_models):
    path = tiny_models["llama"]
    ps = prompts(4, seed=3)
    params = SamplingParams(max_tokens=8, ignore_eos=True)
    expected = local_engine(path, **BIG_KV).generate(ps, params)

    def break_once(servers) -> None:
        pipe = servers[-1].pipeline
        real, calls = pipe.step, []

        def step():
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("boom")
            return real()

        pipe.step = step

    collector, _ = asyncio.run(run_chain(path, [2], [BIG_KV, BIG_KV], ps, params, break_once))
    errors = 0
    for i in range(len(ps)):
        last = collector.events[f"r{i}"][-1]
        if last.failure:
            errors += 1
            assert (
                last.failure == pb.FAILURE_INTERNAL
                and "engine step failed on node n1" in last.error
            )
        else:
            assert tokens_of(collector, f"r{i}") == expected[i]
    assert errors > 0
