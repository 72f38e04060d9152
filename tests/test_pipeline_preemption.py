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

import pytest

from parallax.rpc import parallax_pb2 as pb
from parallax.sampling import SamplingParams
from tests.support.engine import local_engine
from tests.support.node import BIG_KV, MAX_TOKENS, kv_mb, prompts, run_chain, tokens_of


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
