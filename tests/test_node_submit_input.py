"""Bad Submits are refused with INVALID_ARGUMENT at once; whatever a node accepts ends
cleanly, even when a later hop is unreachable while other requests are mid-step."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
from types import SimpleNamespace

import grpc
import pytest

from node import inbox
from node.submit_check import check_route
from parallax.errors import InvalidArgument
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from parallax.sampling import SamplingParams
from parallax.types import LayerRange
from tests.support.node import serving_node
from tests.support.wait import wait_for

LAYERS = 4
UNREACHABLE = "127.0.0.1:1"


def covers_in_order(spans: tuple[tuple[int, int], ...], n: int) -> bool:
    """The reference: consecutive, non-empty, from 0 to n."""
    edges = [0, *(e for _, e in spans)]
    starts = [s for s, _ in spans]
    return bool(spans) and starts == edges[:-1] and all(a < b for a, b in spans) and edges[-1] == n


def test_check_route_agrees_with_the_reference_on_every_small_route():
    points = range(-1, LAYERS + 2)
    spans = list(itertools.product(points, points))
    for k in range(4):
        for route in itertools.product(spans, repeat=k):
            hops = [SimpleNamespace(node_id="n", address="a:1", start=s, end=e) for s, e in route]
            try:
                check_route(hops, LAYERS)
                ok = True
            except InvalidArgument:
                ok = False
            assert ok == covers_in_order(route, LAYERS), route
    for address in ("", "garbage", "host:", ":7000", "host:0", "host:65536", "host:x"):
        with pytest.raises(InvalidArgument, match="node_id and a HOST:PORT address"):
            hop = SimpleNamespace(node_id="n", address=address, start=0, end=LAYERS)
            check_route([hop], LAYERS)


WEIRD = (0.0, -1.0, 2.0, 1e30, -1e30, math.nan, math.inf)


def mutated(rng: random.Random, rid: str, node: str, reply_to: str, vocab: int):
    """A valid request with at most one field broken (or a second hop that is down)."""
    sampling = SamplingParams(temperature=rng.choice([0.0, 0.7]), max_tokens=4, seed=1)
    req = pb.SubmitRequest(
        request_id=rid,
        prompt_ids=[rng.randrange(3, vocab) for _ in range(rng.randrange(1, 24))],
        sampling=sampling.to_proto(),
        reply_to=reply_to,
    )
    cut = rng.randrange(1, LAYERS + 1)
    req.route.hops.add(node_id="n", address=node, start=0, end=cut)
    if cut < LAYERS:  # the rest on a node that is down: a runtime failure, not bad input
        req.route.hops.add(node_id="down", address=UNREACHABLE, start=cut, end=LAYERS)
    what = rng.randrange(10)  # 7, 8, 9: left valid
    if what == 0:
        req.prompt_ids.append(rng.choice([-1, vocab, 2**31 - 1]))
    elif what == 1:
        h = req.route.hops[rng.randrange(len(req.route.hops))]
        h.start, h.end = rng.randrange(-2, LAYERS + 2), rng.randrange(-2, LAYERS + 2)
    elif what == 2:
        req.route.hops[0].node_id = rng.choice(["", "someone-else"])
    elif what == 3:
        field = rng.choice(["temperature", "top_p", "min_p", "repetition_penalty"])
        setattr(req.sampling, field, rng.choice(WEIRD))
    elif what == 4:
        req.sampling.logit_bias[rng.choice([-1, vocab])] = 1.0
    elif what == 5:
        req.ClearField(rng.choice(["request_id", "reply_to", "prompt_ids", "route"]))
    elif what == 6:
        req.reply_to = rng.choice(["garbage", "127.0.0.1:0", "127.0.0.1"])
    return req


REFUSED = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)


async def fuzz(path, n: int, seed: int):
    async with serving_node(path, "n", LayerRange(0, LAYERS)) as (
        node,
        address,
        collector,
        reply_to,
    ):
        vocab = node.spec.vocab_size
        rng = random.Random(seed)
        requests = [mutated(rng, f"r{i}", address, reply_to, vocab) for i in range(n)]
        async with grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.NodeStub(ch)

            async def submit(req):
                try:
                    await stub.Submit(req, timeout=10)
                    return req.request_id
                except grpc.aio.AioRpcError as e:
                    # A route to another first hop or to layers this node lacks is stale
                    # (the gateway routes again); anything else is plain invalid.
                    assert e.code() in REFUSED, e.details()
                    return None

            taken = [r for r in await asyncio.gather(*map(submit, requests)) if r]
        await wait_for(lambda: collector.done >= set(taken), 60, "every taken request to end")
        assert node._loop_task is not None and not node._loop_task.done()
        await wait_for(
            lambda: node.status().kv_free_tokens == node.status().kv_total_tokens,
            10,
            "the node's KV to be free",
        )
        return requests, taken, collector


def test_bad_submits_are_refused_and_taken_ones_end_cleanly(tiny_models):
    requests, taken, collector = asyncio.run(fuzz(tiny_models["llama"], 160, seed=2))
    assert 30 < len(taken) < len(requests)  # both kinds were exercised
    errors = {ev.error for rid in taken for ev in collector.events[rid] if ev.error}
    # The only failure left is the one the test built in: a second hop that is down.
    assert errors and all(e.startswith(f"hop {UNREACHABLE} unreachable") for e in errors), errors
    two_hop = {r.request_id for r in requests if len(r.route.hops) == 2} & set(taken)
    finished_ok = {rid for rid in taken if not any(ev.error for ev in collector.events[rid])}
    assert finished_ok and not (finished_ok & two_hop)


async def reassign_mid_step(path) -> dict[str, str]:
    async with serving_node(path, "n", LayerRange(0, LAYERS)) as (
        node,
        address,
        collector,
        reply_to,
    ):
        sampling = SamplingParams(max_tokens=400, ignore_eos=True).to_proto()

        def submit(rid: str, first: int) -> pb.SubmitRequest:
            req = pb.SubmitRequest(request_id=rid, prompt_ids=[first, 6, 7], sampling=sampling)
            req.reply_to = reply_to
            req.route.hops.add(node_id="n", address=address, start=0, end=LAYERS)
            return req

        async with grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.NodeStub(ch)
            for i in range(24):
                await stub.Submit(submit(f"r{i}", 5 + i), timeout=5)
        await wait_for(lambda: len(collector.events) >= 4, 20, "requests to stream")
        # One more, still queued (not yet taken) when the node is reassigned: it must
        # be answered, not dropped with the old pipeline.
        node.inbox.append(inbox.Submit(submit("late", 40)))
        await node.load(LayerRange(0, LAYERS - 1))  # reassigned while steps run
        await wait_for(lambda: len(collector.done) == 25, 60, "every request to end")
        return {rid: evs[-1].error for rid, evs in collector.events.items()}


def test_a_reassignment_fails_running_requests_without_breaking_a_step(tiny_models, caplog):
    with caplog.at_level(logging.ERROR, logger="node.server"):
        errors = asyncio.run(reassign_mid_step(tiny_models["llama"]))
    assert not [r.message for r in caplog.records if r.levelno >= logging.ERROR]
    # Each request ended by running to its length ("") or by the reassignment, never
    # by an engine step that broke under it ("internal error ...").
    gone = {"the node was reassigned", "node n serves no layers now"}
    assert set(errors.values()) <= {"", *gone}, errors
    assert errors["late"] in gone
    assert sum(e != "" for e in errors.values()) >= 12


async def push_a_bad_token(path) -> tuple[grpc.StatusCode, list[pb.TokenEvent]]:
    async with serving_node(path, "n", LayerRange(0, LAYERS)) as (
        node,
        address,
        collector,
        reply_to,
    ):
        vocab = node.spec.vocab_size
        req = pb.SubmitRequest(
            request_id="r",
            prompt_ids=[5, 6, 7],
            sampling=SamplingParams(max_tokens=40, ignore_eos=True).to_proto(),
            reply_to=reply_to,
        )
        req.route.hops.add(node_id="n", address=address, start=0, end=LAYERS)
        async with grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.NodeStub(ch)
            await stub.Submit(req, timeout=5)
            await wait_for(lambda: "r" in collector.events, 10, "the first token")
            bad = pb.TokenBatch(events=[pb.TokenEvent(request_id="r", token_id=vocab)])
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.PushTokens(bad, timeout=5)
        await wait_for(lambda: "r" in collector.done, 20, "the request to end")
        return refused.value.code(), collector.events["r"]


def test_a_pushed_token_outside_the_vocabulary_is_refused_and_harms_nothing(tiny_models):
    code, events = asyncio.run(push_a_bad_token(tiny_models["llama"]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(events) == 40 and not any(ev.error for ev in events)
