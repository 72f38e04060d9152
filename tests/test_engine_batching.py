"""Continuous batching: batch invariance, seeds, aborts, KV accounting, bad input."""

from __future__ import annotations

import random

import pytest

from parallax.errors import ContextOverflow, InvalidArgument
from parallax.sampling import SamplingParams
from tests.support.engine import local_engine

GREEDY = SamplingParams(max_tokens=16)


def prompts(n: int, seed: int = 1) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, 256) for _ in range(rng.randrange(3, 40))] for _ in range(n)]


def run_alone(engine, prompt, params):
    return engine.generate([prompt], params)[0]


def test_batched_equals_alone_with_mid_flight_arrivals(tiny_models):
    eng = local_engine(tiny_models["llama"], max_batch_tokens=32)
    ps = prompts(8)
    alone = [run_alone(eng, p, GREEDY) for p in ps]
    # Half arrive at once, the rest join while the first ones are mid-decode.
    out = {f"r{i}": [] for i in range(8)}
    for i in range(4):
        eng.add_request(f"r{i}", ps[i], GREEDY)
    steps = 0
    while eng.has_work() or steps < 6:
        if steps in (3, 5, 7, 9):
            i = 4 + (steps - 3) // 2
            eng.add_request(f"r{i}", ps[i], GREEDY)
        for r in eng.step():
            out[r.request_id].append(r.sampled.token_id)
        steps += 1
    assert [out[f"r{i}"] for i in range(8)] == alone
    assert eng.kv.free_blocks == eng.kv.num_blocks


def test_seeded_sampling_is_reproducible_whatever_the_batch(tiny_models):
    eng = local_engine(tiny_models["qwen2"])
    ps = prompts(4, seed=2)
    params = SamplingParams(temperature=1.0, top_p=0.9, top_k=50, seed=1234, max_tokens=12)
    alone = run_alone(eng, ps[0], params)
    others = [SamplingParams(temperature=1.0, seed=i, max_tokens=12) for i in range(3)]
    batched = eng.generate(ps, [params, *others])
    assert batched[0] == alone
    different_seed = run_alone(eng, ps[0], SamplingParams(temperature=1.0, seed=99, max_tokens=12))
    assert different_seed != alone


def test_penalties_and_filters_change_output(tiny_models):
    eng = local_engine(tiny_models["llama"])
    p = prompts(1, seed=3)[0]
    base = run_alone(eng, p, SamplingParams(max_tokens=24))
    penalised = run_alone(eng, p, SamplingParams(max_tokens=24, repetition_penalty=5.0))
    assert len(set(penalised)) >= len(set(base))
    freq = run_alone(eng, p, SamplingParams(max_tokens=24, frequency_penalty=2.0))
    assert freq != base or len(set(base)) == len(base)
    banned = base[0]
    biased = run_alone(eng, p, SamplingParams(max_tokens=4, logit_bias={banned: -100.0}))
    assert biased[0] != banned


def test_stop_tokens_min_tokens_and_logprobs(tiny_models):
    eng = local_engine(tiny_models["llama"])
    p = prompts(1, seed=4)[0]
    base = run_alone(eng, p, SamplingParams(max_tokens=10))
    stop_at = base[3]
    first = base.index(stop_at)
    stopped = run_alone(eng, p, SamplingParams(max_tokens=10, stop_token_ids=(stop_at,)))
    assert stopped == base[: first + 1]
    eng.add_request("lp", p, SamplingParams(max_tokens=3, logprobs=5))
    results = []
    while eng.has_work():
        results += eng.step()
    assert len(results) == 3 and results[-1].finish_reason == "length"
    for r in results:
        assert len(r.sampled.top) == 5 and r.sampled.logprob <= 0
        assert r.sampled.top[0][0] == r.sampled.token_id  # greedy picks the top-1


def test_hundred_random_requests_with_aborts_leak_no_blocks(tiny_models):
    eng = local_engine(tiny_models["qwen3"], kv_cache_mb=0.25, max_batch_tokens=64, max_running=8)
    rng = random.Random(7)
    live: set[str] = set()
    for i, p in enumerate(prompts(100, seed=5)):
        eng.add_request(f"q{i}", p, SamplingParams(max_tokens=rng.randrange(1, 12)))
        live.add(f"q{i}")
        for r in eng.step():
            if r.finish_reason:
                live.discard(r.request_id)
        if rng.random() < 0.3 and live:
            victim = rng.choice(sorted(live))
            eng.abort(victim)
            live.discard(victim)
        eng.kv.check_invariants()
    while eng.has_work():
        eng.step()
        eng.kv.check_invariants()
    assert eng.kv.free_blocks == eng.kv.num_blocks
    assert not eng.seqs


def test_bad_input_gets_clear_errors(tiny_models):
    eng = local_engine(tiny_models["llama"])
    with pytest.raises(ContextOverflow, match="context"):
        eng.add_request("long", [5] * 600, GREEDY)
    with pytest.raises(InvalidArgument, match="vocabulary"):
        eng.add_request("oov", [5, 9999], GREEDY)
    with pytest.raises(InvalidArgument, match="empty"):
        eng.add_request("empty", [], GREEDY)
    with pytest.raises(InvalidArgument, match="temperature"):
        SamplingParams(temperature=-1)


def test_ids_past_the_tokenizer_vocab_are_never_sampled(tiny_models):
    # The tiny tokenizer has 259 tokens; the model's embedding has 260 rows.
    eng = local_engine(tiny_models["llama"], vocab_limit=259)
    bias = SamplingParams(max_tokens=6, logit_bias={259: 100.0})
    assert 259 not in run_alone(eng, prompts(1)[0], bias)
    hot = SamplingParams(max_tokens=6, temperature=1.0, seed=3, logit_bias={259: 100.0})
    assert 259 not in run_alone(eng, prompts(1)[0], hot)


def test_micro_batches_cap_decodes_per_step():
    from node.engine.kv_blocks import KVBlockManager
    from node.engine.scheduler import Scheduler, SeqState, Sequence

    sched = Scheduler(KVBlockManager(64, 4), max_batch_tokens=64, max_running=8)
    seqs = [Sequence(f"s{i}", [1, 2, 3], 3) for i in range(6)]
    for seq in seqs:
        sched.add(seq)
    assert len(sched.schedule()) == 6  # all six prefill in one step
    for seq in seqs:
        sched.on_token(seq, 7, finished=False)
    first = sched.schedule(max_decodes=2)
    assert [c.n for c in first] == [1, 1]
    second = sched.schedule(max_decodes=2)
    assert {c.request_id for c in first}.isdisjoint(c.request_id for c in second)
    assert len(sched.schedule()) == 2  # uncapped: the rest
    assert all(s.state is SeqState.IN_FLIGHT for s in seqs)
