"""Plain greedy rows share one batched argmax; rows with anything to adjust keep their
own path, in the same call, and every row's history advances."""

from __future__ import annotations

import torch

from node.engine.sampler import RequestSampler, sample
from parallax.sampling import SamplingParams


def _sampler(**params) -> RequestSampler:
    return RequestSampler(SamplingParams(**params), [1, 2], frozenset({0}), 1000)


def test_mixed_rows_each_get_their_own_rule():
    torch.manual_seed(0)
    logits = torch.randn(5, 50)
    logits[:, 0] = 10.0  # EOS is every row's argmax
    logits[:, 7] = 9.0
    samplers = [
        _sampler(),  # plain greedy: EOS
        _sampler(logit_bias={3: 100.0}),  # the bias wins
        _sampler(min_tokens=1),  # EOS banned before the first token: the runner-up
        _sampler(logprobs=2),  # greedy, with logprobs
        _sampler(),
    ]
    got = sample(logits, samplers)
    assert [s.token_id for s in got] == [0, 3, 7, 0, 0]
    assert got[3].logprob == float(torch.log_softmax(logits[3], -1)[0])
    assert len(got[3].top) == 2 and got[0].top == ()
    assert [s.generated for s in samplers] == [[0], [3], [7], [0], [0]]
    # vocab_limit still applies to the batched rows: ids 6 and up are never drawn.
    row = logits[:1, 1:]  # its best ids: 6 (was 7), then the random rest
    (limited,) = sample(row, [_sampler()], vocab_limit=6)
    assert limited.token_id == int(row[0, :6].argmax()) != 6


def test_batched_greedy_breaks_ties_to_the_first_id_as_argmax():
    logits = torch.zeros(3, 40)
    logits[:, 9] = logits[:, 4] = 5.0
    logits[2, 30] = 6.0
    got = sample(logits, [_sampler() for _ in range(3)])
    assert [s.token_id for s in got] == [4, 4, 30]
