"""Requests of a simulated run: Poisson arrivals, prompt and output lengths drawn uniformly."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class SimRequest:
    request_id: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int


def poisson_requests(
    count: int,
    rate_per_s: float,
    seed: int,
    prompt: tuple[int, int] = (64, 768),
    output: tuple[int, int] = (32, 256),
) -> list[SimRequest]:
    rng = random.Random(seed)
    t, out = 0.0, []
    for i in range(count):
        t += rng.expovariate(rate_per_s)
        out.append(SimRequest(i, t, rng.randint(*prompt), rng.randint(*output)))
    return out
