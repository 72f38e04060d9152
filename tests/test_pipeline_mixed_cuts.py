"""Overlapping shards: requests on the same two nodes may be cut at different layers.

The router picks each request's cut from live loads, so one step of a node can run
several layer groups whose hidden states all go to the same next hop. Every group's
chunks must reach it (one ForwardRequest per group): a lost chunk is a request that
never gets a token. The groups share one pass over the layers, which must not change
a single token. In-process NodeServers on loopback gRPC, golden parity.
"""

from __future__ import annotations

import asyncio

from node.server import NodeServer
from parallax.config.generate import EngineConfig
from parallax.models.registry import resolve_model
from parallax.rpc import parallax_pb2 as pb
from parallax.sampling import SamplingParams
from parallax.types import LayerRange
from tests.support.engine import local_engine
from tests.support.node import (
    BIG_KV,
    Collector,
    collecting_gateway,
    prompts,
    submit_all,
    tokens_of,
)
from tests.support.wait import wait_for

CUTS = (1, 2, 3)  # request i is cut at CUTS[i % 3]: node A runs [0, cut), B [cut, 4)


async def run_mixed(path, ps, params, groups_seen: list[int]) -> Collector:
    resolved = resolve_model(str(path))
    servers, addresses = [], []
    async with collecting_gateway() as (collector, reply_to):
        try:
            for name, layers in (("a", LayerRange(0, 3)), ("b", LayerRange(1, 4))):
                s = NodeServer(EngineConfig(**BIG_KV), name=name)
                servers.append(s)
                addresses.append(f"127.0.0.1:{await s.start('127.0.0.1', 0)}")
                s.node_id = name
                s.set_model(resolved, resolved.spec.eos_token_ids)
                await s.load(layers)
                real = s.pipeline.runner.run_groups

                def spy(groups, real=real):
                    groups_seen.append(len(groups))
                    return real(groups)

                s.pipeline.runner.run_groups = spy

            def route_of(i: int) -> pb.Route:
                cut = CUTS[i % len(CUTS)]
                route = pb.Route()
                route.hops.add(node_id="a", address=addresses[0], start=0, end=cut)
                route.hops.add(node_id="b", address=addresses[1], start=cut, end=4)
                return route

            await submit_all(addresses[0], ps, params, reply_to, route_of)
            await wait_for(lambda: len(collector.done) == len(ps), 30, "every request to finish")
            return collector
        finally:
            for s in servers:
                await s.stop()


def test_requests_cut_at_different_layers_on_the_same_nodes_all_finish(tiny_models):
    path = tiny_models["llama"]
    ps = prompts(9, seed=5)
    params = SamplingParams(max_tokens=12, ignore_eos=True)
    expected = local_engine(path, **BIG_KV).generate(ps, params)
    groups_seen: list[int] = []
    collector = asyncio.run(run_mixed(path, ps, params, groups_seen))
    # Steps ran several cuts at once, sharing a pass over the layers: not vacuous.
    assert max(groups_seen) >= 2, groups_seen
    assert [tokens_of(collector, f"r{i}") for i in range(len(ps))] == expected
