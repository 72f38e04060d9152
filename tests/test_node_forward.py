"""A Forward message carries chunks of many requests: one it cannot take is dropped
alone, with a clear error to its gateway, and the others go on (they must not stall).

A real NodeServer on loopback gRPC, sent a crafted Forward as a previous hop would.
"""

from __future__ import annotations

import asyncio

import grpc
import torch

from parallax.config.generate import EngineConfig
from parallax.models.registry import resolve_model
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from parallax.sampling import SamplingParams
from parallax.types import LayerRange
from parallax.wire.codec import encode_tensor
from tests.support.node import BIG_KV, Collector, serving_node
from tests.support.wait import wait_for

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
    async with serving_node(path, "b", LayerRange(2, 4)) as (node, address, collector, reply_to):
        msg = pb.ForwardRequest(sender_id="a")
        # Cut at layer 1: this node holds [2, 4), so that route is stale here.
        for rid, cut in (("stale", 1), ("good", 2)):
            c = msg.chunks.add(request_id=rid, start_pos=0, num_tokens=3, sample=True)
            c.request.CopyFrom(request(rid, reply_to, address, cut))
        msg.hidden.CopyFrom(encode_tensor(torch.randn(6, node.spec.hidden_size)))
        async with grpc.aio.insecure_channel(address) as ch:
            await pb_grpc.NodeStub(ch).Forward(msg, timeout=5)
        await wait_for(lambda: collector.done == {"stale", "good"}, 20, "both requests to end")
        assert node._loop_task is not None and not node._loop_task.done()
        # Its heartbeat tells the gateway the block it keeps free to decode into.
        assert node.status().kv_block_tokens == BIG_KV["kv_block_size"]
        return collector


def test_a_stale_chunk_fails_alone_and_its_neighbours_run(tiny_models):
    collector = asyncio.run(send_mixed(tiny_models["llama"]))
    (stale,) = collector.events["stale"]
    assert stale.failure == pb.FAILURE_REASSIGNED and "route is stale" in stale.error
    (good,) = collector.events["good"]
    assert good.finished and not good.error and good.finish_reason == "length"


def test_a_late_kv_free_never_drops_a_re_prefill_that_overtook_it(tiny_models):
    # The first hop's KV-only release goes straight to this hop, the re-prefill it
    # announces comes by way of the hops between: it may arrive first. The count in
    # the release tells a stale KV (free it) from a fresh one (keep it).
    from node.engine.engine import make_runner
    from node.outbox import Outbox
    from node.pipeline import NodePipeline
    from node.weights import load_shard_model

    resolved = resolve_model(str(tiny_models["llama"]))
    cfg = EngineConfig(**BIG_KV)
    model = load_shard_model(resolved, LayerRange(2, 4), progress=False)
    pipe = NodePipeline("b", make_runner(model, cfg), cfg, resolved.spec.eos_token_ids)

    def forward(n: int) -> None:  # the request's first chunk: n tokens from position 0
        msg = pb.ForwardRequest(sender_id="a")
        c = msg.chunks.add(request_id="r", start_pos=0, num_tokens=n, sample=False)
        c.request.CopyFrom(request("r", "127.0.0.1:2", "127.0.0.1:3", 2))
        hidden = torch.randn(n, resolved.spec.hidden_size)
        pipe.enqueue(msg, hidden, Outbox())
        pipe.step()

    forward(3)
    assert pipe.kv.length("r") == 3
    forward(5)  # the first hop preempted it: its re-prefill (prompt + 2 tokens) ran here
    assert pipe.restarts == 1 and pipe.kv.length("r") == 5
    pipe.free_kv({"r": 1})  # the release for that preemption, late: stale news
    assert pipe.kv.length("r") == 5 and pipe.freed_early == 0
    pipe.free_kv({"r": 2})  # a second preemption, announced before its re-prefill
    assert not pipe.kv.has("r") and pipe.freed_early == 1
    forward(6)
    assert pipe.restarts == 2 and pipe.kv.length("r") == 6
    pipe.kv.check_invariants()


def test_non_finite_logits_fail_their_own_request_only(tiny_models):
    from node.engine.engine import make_runner
    from node.last_hop import NON_FINITE
    from node.outbox import Outbox
    from node.pipeline import NodePipeline
    from node.weights import load_shard_model

    resolved = resolve_model(str(tiny_models["llama"]))
    cfg = EngineConfig(**BIG_KV)
    model = load_shard_model(resolved, LayerRange(2, 4), progress=False)
    pipe = NodePipeline("b", make_runner(model, cfg), cfg, resolved.spec.eos_token_ids)
    msg = pb.ForwardRequest(sender_id="a")
    for rid in ("nan", "good"):
        c = msg.chunks.add(request_id=rid, start_pos=0, num_tokens=3, sample=True)
        c.request.CopyFrom(request(rid, "127.0.0.1:2", "127.0.0.1:3", 2))
    hidden = torch.randn(6, resolved.spec.hidden_size)
    hidden[:3] = float("nan")  # what a float16 overflow upstream would send
    pipe.enqueue(msg, hidden, Outbox())
    out = pipe.step()
    events = {ev.request_id: ev for ev in out.delivers["127.0.0.1:2"].events}
    assert events["nan"].failure == pb.FAILURE_INTERNAL and events["nan"].error == NON_FINITE
    assert events["good"].finish_reason == "length" and not events["good"].error


def test_crafted_forward_chunks_fail_alone_and_every_other_request_completes(tiny_models):
    # Chunks come from peers (or from anyone who reaches the port): each request a first
    # chunk carries is checked whole, as a Submit is. Sampling left at the proto defaults
    # (top_p=0), an out-of-vocabulary prompt or a bad route fails that request alone;
    # before, the step that sampled it failed, and every request on the node with it.
    from node.engine.engine import make_runner
    from node.outbox import Outbox
    from node.pipeline import NodePipeline
    from node.weights import load_shard_model

    resolved = resolve_model(str(tiny_models["llama"]))
    cfg = EngineConfig(**BIG_KV)
    model = load_shard_model(resolved, LayerRange(2, 4), progress=False)
    pipe = NodePipeline("b", make_runner(model, cfg), cfg, resolved.spec.eos_token_ids)
    crafted = {
        "default-sampling": lambda r: r.ClearField("sampling"),
        "bad-prompt": lambda r: r.prompt_ids.append(10**6),
        "bad-route": lambda r: setattr(r.route.hops[1], "end", 3),
        "bad-offset": lambda r: setattr(r, "generated_offset", 99),
    }
    msg = pb.ForwardRequest(sender_id="a")
    for rid in ("good-1", *crafted, "good-2"):
        c = msg.chunks.add(request_id=rid, start_pos=0, num_tokens=3, sample=True)
        c.request.CopyFrom(request(rid, "127.0.0.1:2", "127.0.0.1:3", 2))
        if rid in crafted:
            crafted[rid](c.request)
    out = Outbox()
    pipe.enqueue(msg, torch.randn(3 * len(msg.chunks), resolved.spec.hidden_size), out)
    out.merge(pipe.step())
    events = {ev.request_id: ev for ev in out.delivers["127.0.0.1:2"].events}
    for rid in crafted:
        assert events[rid].failure == pb.FAILURE_INVALID, (rid, events[rid])
    for rid in ("good-1", "good-2"):
        assert events[rid].finish_reason == "length" and not events[rid].failure
    assert not pipe.reqs and pipe.kv.free_blocks == pipe.kv.num_blocks
