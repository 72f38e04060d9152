"""`parallax bench pipeline`: a 3-node loopback pipeline against the single-process engine.

Both run the same model on this machine in the same run; the ratio is what counts.
The cluster is real: `parallax run` plus three `parallax join` processes.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import sys
import time
from typing import Any

import httpx
import torch

from parallax.config.bench import BenchConfig
from parallax.procs import spawn
from parallax.sampling import SamplingParams
from parallax.types import LayerRange

PROMPTS = [
    "Tell me about the history of Rome.",
    "Explain photosynthesis simply.",
    "Write a short poem about autumn.",
    "What are the benefits of exercise?",
    "Describe how a bicycle works.",
    "Give me three tips for learning Python.",
    "Why is the sky blue?",
    "Summarise the plot of Hamlet.",
]


# Not measured by this benchmark: quoted beside its results for context, with its
# source and date, and never divided into a ratio (a ratio needs both sides measured
# in the same run).
PETALS_REFERENCE = {
    "what": "Petals 2.2, same SmolLM2 model over 3 servers on loopback, this machine",
    "source": "issue #3 (stated there; not re-measured since)",
    "date": "before 2026-11-28 (issue #3 closed that day)",
    "b1_tok_s": 10.0,
    "agg8_tok_s": [12.0, 16.0],
}


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def stream_decode_rate(url: str, model: str, prompt: str, tokens: int) -> tuple[int, float]:
    """(tokens received, seconds from first to last token) of one streamed chat."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }
    n, first, last = 0, None, None
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: {") and '"content"' in line:
                now = time.perf_counter()
                first = first or now
                last = now
                n += 1
    return n, (last - first) if first and last else 0.0


def cluster_rates(model: str, tokens: int) -> dict[str, float]:
    coord = spawn(["run", "--model", model, "--grpc-port", "0", "--port", "0", "--min-stages", "3"])
    nodes = []
    try:
        grpc_addr = coord.wait_for(r"coordinator grpc listening on (\S+)", 60).group(1)
        url = coord.wait_for(r"gateway http listening on (\S+)", 30).group(1)
        for i in range(3):
            nodes.append(
                spawn(["join", "--coordinator", grpc_addr, "--name", f"b{i}", "--threads", "1"])
            )
        deadline = time.monotonic() + 300
        while not httpx.get(f"{url}/cluster/status", timeout=5).json()["coverage"]["serving"]:
            if time.monotonic() > deadline:
                raise TimeoutError("cluster did not become ready")
            time.sleep(0.5)
        mid = httpx.get(f"{url}/v1/models", timeout=5).json()["data"][0]["id"]
        stream_decode_rate(url, mid, "warm up", 4)
        n, dt = stream_decode_rate(url, mid, PROMPTS[0], tokens)
        out = {"b1_tok_s": (n - 1) / dt}
        _say(f"  cluster batch-1: {out['b1_tok_s']:.1f} tok/s")
        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(8) as ex:
            res = list(ex.map(lambda p: stream_decode_rate(url, mid, p, tokens), PROMPTS))
        out["agg8_tok_s"] = sum(n for n, _ in res) / (time.perf_counter() - t0)
        _say(f"  cluster 8 concurrent: {out['agg8_tok_s']:.1f} tok/s aggregate")
        ranges = [
            n["assignment"]["range"] for n in httpx.get(f"{url}/cluster/status").json()["nodes"]
        ]
        out["ranges"] = json.dumps(sorted(ranges))
        return out
    finally:
        for c in [*nodes, coord]:
            c.stop()


def local_rates(model: str, tokens: int) -> dict[str, float]:
    from node.engine.engine import LocalEngine
    from node.weights import load_shard_model
    from parallax.config.generate import EngineConfig
    from parallax.models.registry import resolve_model
    from parallax.tokenizer import Tokenizer

    torch.set_num_threads(1)
    r = resolve_model(model)
    tok = Tokenizer.from_model(r)
    eng = LocalEngine(
        load_shard_model(r, LayerRange(0, r.spec.num_layers), progress=False), EngineConfig(), ()
    )
    prompts = [tok.encode_chat([{"role": "user", "content": p}]) for p in PROMPTS]
    params = SamplingParams(max_tokens=tokens)
    eng.generate([prompts[0]], SamplingParams(max_tokens=4))
    eng.add_request("b1", prompts[0], params)
    eng.step()  # prefill and first token
    t0, n = time.perf_counter(), 0
    while eng.has_work():
        n += len(eng.step())
    out = {"b1_tok_s": n / (time.perf_counter() - t0)}
    _say(f"  local batch-1: {out['b1_tok_s']:.1f} tok/s")
    t0 = time.perf_counter()
    got = eng.generate(prompts, params)
    out["agg8_tok_s"] = sum(map(len, got)) / (time.perf_counter() - t0)
    _say(f"  local 8 concurrent: {out['agg8_tok_s']:.1f} tok/s aggregate")
    return out


def bench_pipeline(config: BenchConfig) -> dict[str, Any]:
    tokens = 24 if config.quick else 96
    _say(f"bench pipeline: {config.model}, 3 nodes x 1 thread vs local 1 thread, {tokens} tokens")
    local = local_rates(config.model, tokens)
    cluster = cluster_rates(config.model, tokens)
    return {
        "model": config.model,
        "tokens": tokens,
        "local": local,
        "cluster": cluster,
        "ratios": {
            "pipeline_efficiency_b1": cluster["b1_tok_s"] / local["b1_tok_s"],
            "pipeline_efficiency_agg8": cluster["agg8_tok_s"] / local["agg8_tok_s"],
        },
        "petals_reference_not_this_run": PETALS_REFERENCE,
    }
