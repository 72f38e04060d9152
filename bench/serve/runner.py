"""One benchmark run at one request rate: send every sample on its arrival time."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Sequence
from typing import Any

import httpx
from tqdm import tqdm

from bench.serve.arrivals import send_offsets
from bench.serve.client import Target, send_request
from bench.serve.datasets import SampleRequest
from bench.serve.metrics import RequestOutcome, compute_metrics

CONNECT_TIMEOUT_S = 10.0


async def run_at_rate(
    target: Target,
    samples: Sequence[SampleRequest],
    *,
    rate: float,
    burstiness: float,
    max_concurrency: int,
    slos_ms: dict[str, float],
    seed: int,
) -> dict[str, Any]:
    """The metrics of one run, plus the load it ran under (rate inf is "inf" in JSON)."""
    offsets = send_offsets(len(samples), rate, burstiness, random.Random(seed))
    gate = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    timeout = httpx.Timeout(target.timeout_s, connect=CONNECT_TIMEOUT_S)
    # No pool limit: a client-side queue would hide the server's own queueing in TTFT.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    label = f"rate {rate:g} req/s" if not math.isinf(rate) else "rate inf"
    with tqdm(total=len(samples), desc=label, unit="req") as bar:
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:

            async def one(sample: SampleRequest) -> RequestOutcome:
                if gate is None:
                    outcome = await send_request(client, target, sample)
                else:
                    # As in vLLM, time spent waiting for a slot is not in TTFT.
                    async with gate:
                        outcome = await send_request(client, target, sample)
                bar.update(1)
                return outcome

            start = time.perf_counter()
            tasks = []
            for sample, offset in zip(samples, offsets, strict=True):
                delay = start + offset - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(sample)))
            outcomes = await asyncio.gather(*tasks)
            duration = time.perf_counter() - start
    metrics = compute_metrics(outcomes, duration, slos_ms)
    load = {
        "request_rate": "inf" if math.isinf(rate) else rate,
        "burstiness": burstiness,
        "max_concurrency": max_concurrency or None,
        "num_prompts": len(samples),
        "goodput_slos_ms": slos_ms,
    }
    return load | metrics
