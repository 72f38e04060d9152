"""The node loop (in-process NodeServers on loopback gRPC): work that cannot run yet
(every request awaiting its token, --max-running reached) waits for the next message
instead of stepping again at once (before, the first node of a chain spun a core through
empty steps until tokens came back); a bug while handling one message fails the requests
it concerns, not the loop."""

from __future__ import annotations

import asyncio

from parallax.rpc import parallax_pb2 as pb
from parallax.sampling import SamplingParams
from tests.support.engine import local_engine
from tests.support.node import BIG_KV, MAX_TOKENS, prompts, run_chain


def test_first_node_does_not_spin_while_its_requests_are_downstream(tiny_models):
    path = tiny_models["llama"]
    ps = prompts(3)
    params = SamplingParams(max_tokens=MAX_TOKENS, ignore_eos=True)
    expected = local_engine(path, **BIG_KV).generate(ps, params)
    steps = {"all": 0, "empty": 0}

    def count(servers) -> None:
        pipe = servers[0].pipeline
        real = pipe.step

        def step():
            out = real()
            steps["all"] += 1
            steps["empty"] += out.ran == 0
            return out

        pipe.step = step

    # One request at a time on the first node: the other two wait there while the
    # running one's token goes round the chain.
    cfgs = [{**BIG_KV, "max_running": 1}, BIG_KV]
    collector, _servers = asyncio.run(run_chain(path, [2], cfgs, ps, params, setup=count))
    for i, want in enumerate(expected):
        got = [ev.token_id for ev in collector.events[f"r{i}"] if not ev.error]
        assert got == want
    tokens = len(ps) * MAX_TOKENS
    # A step per token and a few for arrivals; a spinning loop makes thousands.
    assert steps["all"] <= 3 * tokens, steps
    assert steps["empty"] <= tokens, steps


def test_a_bug_handling_one_message_fails_that_request_and_the_node_keeps_serving(tiny_models):
    """The second node's handling of the first hidden states it receives raises (a stand-in
    for a bug): that request fails with a clear error, the others finish exactly, and the
    node loop survives."""
    path = tiny_models["llama"]
    ps = prompts(3)
    params = SamplingParams(max_tokens=MAX_TOKENS, ignore_eos=True)
    expected = local_engine(path, **BIG_KV).generate(ps, params)
    broken: list[str] = []

    def break_once(servers) -> None:
        pipe = servers[1].pipeline
        real = pipe.enqueue

        def enqueue(msg, hidden, out):
            if not broken:
                broken.extend(c.request_id for c in msg.chunks)
                raise RuntimeError("a bug")
            return real(msg, hidden, out)

        pipe.enqueue = enqueue

    collector, servers = asyncio.run(
        run_chain(path, [2], [BIG_KV, BIG_KV], ps, params, setup=break_once)
    )
    assert broken
    for i, want in enumerate(expected):
        events = collector.events[f"r{i}"]
        if f"r{i}" in broken:
            assert events[-1].failure == pb.FAILURE_INTERNAL
            assert "internal error on node n1 while handling forward" in events[-1].error
        else:
            assert [ev.token_id for ev in events] == want
