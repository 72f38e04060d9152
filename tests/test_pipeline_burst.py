"""A burst through a slow middle hop: every request completes, none is refused.

A middle hop whose step is slow (a loaded box) finds many Forward messages queued when
its step ends. It must never take them all at once and send the next hop a message
larger than that hop accepts: under a burst against `parallax demo`, that was refused
with INVALID_ARGUMENT ("hop ... unreachable") and the gateway failed the requests.
"""

from __future__ import annotations

import asyncio
import time

from parallax.sampling import SamplingParams
from tests.support.engine import local_engine
from tests.support.node import BIG_KV, prompts, run_chain, tokens_of


def slow_middle(servers) -> None:
    pipe = servers[1].pipeline
    real, sizes = pipe.step, []

    def step():
        time.sleep(0.05)  # a loaded box: Forwards pile up meanwhile
        out = real()
        sizes.extend(
            sum(c.num_tokens for c in m.chunks) for ms in out.forwards.values() for m in ms
        )
        return out

    pipe.step = step
    servers[1].forward_rows = sizes


def test_a_burst_through_a_slow_middle_hop_loses_nothing(tiny_models):
    path = tiny_models["llama"]
    ps = prompts(24, seed=5)
    params = SamplingParams(max_tokens=6, ignore_eos=True)
    expected = local_engine(path, **BIG_KV).generate(ps, params)
    collector, servers = asyncio.run(run_chain(path, [1, 3], [BIG_KV] * 3, ps, params, slow_middle))
    assert [tokens_of(collector, f"r{i}") for i in range(len(ps))] == expected
    # Every message the middle hop sent fits one step of the next hop.
    assert max(servers[1].forward_rows) <= BIG_KV["max_batch_tokens"]
