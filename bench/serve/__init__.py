"""`parallax bench serve`: load an OpenAI-compatible server as vLLM's benchmark_serving does.

A client only: httpx and asyncio, never torch, node/ or coordinator/. Prompts come from
the model's tokenizer (random) or a ShareGPT file; each is sent as a streamed chat
completion on a Poisson/gamma schedule, and the run is summed up as TTFT, TPOT, ITL,
end-to-end latency, throughput, goodput and failed requests by HTTP status.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path
from typing import Any

import httpx

from bench.serve.client import Target
from bench.serve.datasets import (
    SHIPPED_SHAREGPT,
    SampleRequest,
    random_requests,
    sharegpt_requests,
)
from bench.serve.report import format_sweep, format_table
from bench.serve.runner import run_at_rate
from bench.serve.sweep import first_429_rate, plot_sweep
from parallax.config.bench import BenchConfig
from parallax.errors import ParallaxError
from parallax.models.registry import resolve_model
from parallax.tokenizer import Tokenizer

MODELS_TIMEOUT_S = 10.0


class ServerUnreachable(ParallaxError):
    """The benchmarked server did not answer its model list."""


def bench_serve(config: BenchConfig) -> dict[str, Any]:
    base_url = config.base_url.rstrip("/").removesuffix("/v1")
    model = config.served_model_name or served_model(base_url, config.api_key)
    target = Target(base_url, config.api_key, model, config.ignore_eos, config.request_timeout_s)
    samples = load_samples(config)
    rates = config.sweep_rates() if config.sweep else (config.request_rate,)
    runs = []
    for rate in rates:
        run = asyncio.run(
            run_at_rate(
                target,
                samples,
                rate=rate,
                burstiness=config.burstiness,
                max_concurrency=config.max_concurrency,
                slos_ms=config.goodput_slos_ms(),
                seed=config.seed,
            )
        )
        print(format_table(run), flush=True)
        runs.append(run)
    header = {
        "base_url": base_url,
        "model": model,
        "tokenizer": config.model,
        "dataset": dataset_label(config),
        "seed": config.seed,
    }
    if not config.sweep:
        return header | runs[0]
    rate_429 = first_429_rate(runs)
    png = Path(config.output or f"bench-output/{config.kind}.json").with_suffix(".png")
    plot_sweep(runs, png, title=f"parallax bench serve: {model} at {base_url}")
    print(format_sweep(runs, rate_429), flush=True)
    print(f"wrote {png}", file=sys.stderr)
    return header | {"sweep": runs, "rate_429_begins": rate_429, "plot": str(png)}


def served_model(base_url: str, api_key: str) -> str:
    """The first model the server lists."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        resp = httpx.get(f"{base_url}/v1/models", headers=headers, timeout=MODELS_TIMEOUT_S)
        resp.raise_for_status()
        return str(resp.json()["data"][0]["id"])
    except (httpx.HTTPError, ValueError, KeyError, IndexError) as e:
        raise ServerUnreachable(
            f"GET {base_url}/v1/models failed ({type(e).__name__}: {e}); check --base-url "
            "(the server's root, e.g. http://127.0.0.1:8000) and --api-key, or pass "
            "--served-model-name"
        ) from e


def load_samples(config: BenchConfig) -> list[SampleRequest]:
    tok = Tokenizer.from_model(resolve_model(config.model))
    rng = random.Random(config.seed)
    if config.dataset_name == "sharegpt":
        path = Path(config.dataset_path) if config.dataset_path else SHIPPED_SHAREGPT
        return sharegpt_requests(path, tok, config.num_prompts, config.sharegpt_output_len, rng)
    return random_requests(
        tok,
        config.num_prompts,
        config.random_input_len,
        config.random_output_len,
        config.random_range_ratio,
        rng,
    )


def dataset_label(config: BenchConfig) -> str:
    if config.dataset_name == "sharegpt":
        return f"sharegpt:{config.dataset_path or SHIPPED_SHAREGPT.name}"
    return (
        f"random:in={config.random_input_len},out={config.random_output_len},"
        f"range_ratio={config.random_range_ratio}"
    )
