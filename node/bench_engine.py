"""`parallax bench engine`: our engine against transformers on the same model and threads."""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

import torch

from parallax.config.bench import BenchConfig
from parallax.config.generate import EngineConfig
from parallax.models.registry import resolve_model
from parallax.sampling import SamplingParams
from parallax.types import LayerRange


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def measure_bandwidth_gbs(seconds: float = 1.0) -> float:
    src = torch.empty(64 * 2**20 // 4, dtype=torch.float32).uniform_()
    dst = torch.empty_like(src)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        dst.copy_(src)
        n += 1
    # A copy reads and writes every byte.
    return 2 * src.numel() * 4 * n / (time.perf_counter() - t0) / 1e9


def ours(resolved, prompt: list[int], decode_tokens: int, quick: bool) -> dict[str, Any]:
    from node.engine.engine import LocalEngine
    from node.weights import load_shard_model

    model = load_shard_model(resolved, LayerRange(0, resolved.spec.num_layers), progress=False)
    cfg = EngineConfig(kv_cache_mb=512, max_batch_tokens=512, max_running=64)
    eng = LocalEngine(model, cfg, ())
    greedy = SamplingParams(max_tokens=decode_tokens)
    eng.generate([prompt], SamplingParams(max_tokens=4))  # warm up
    out: dict[str, Any] = {}
    # Batch 1: time decode steps only (after the prefill step).
    eng.add_request("b1", prompt, greedy)
    eng.step()
    t0, n = time.perf_counter(), 0
    while eng.has_work():
        n += len(eng.step())
    out["decode_b1_tok_s"] = n / (time.perf_counter() - t0)
    _say(f"  ours batch-1 decode: {out['decode_b1_tok_s']:.1f} tok/s")
    for conc in (4, 16):
        t0 = time.perf_counter()
        res = eng.generate([prompt] * conc, greedy)
        out[f"aggregate_{conc}_tok_s"] = sum(map(len, res)) / (time.perf_counter() - t0)
        _say(f"  ours {conc} concurrent: {out[f'aggregate_{conc}_tok_s']:.1f} tok/s aggregate")
    long_prompt = (prompt * (512 // len(prompt) + 1))[:512]
    t0 = time.perf_counter()
    eng.add_request("ttft", long_prompt, SamplingParams(max_tokens=1))
    while eng.has_work():
        eng.step()
    out["ttft_512_s"] = time.perf_counter() - t0
    _say(f"  ours TTFT (512-token prompt): {out['ttft_512_s'] * 1000:.0f} ms")
    out["weight_bytes"] = sum(p.numel() * p.element_size() for p in model.parameters())
    return out


def reference(resolved, prompt: list[int], decode_tokens: int) -> dict[str, Any]:
    import transformers as tf

    path = resolved.path
    ref = tf.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    ).eval()
    ids = torch.tensor([prompt])

    def run(batch: torch.Tensor, new: int) -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            ref.generate(
                batch,
                attention_mask=torch.ones_like(batch),
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                pad_token_id=0,
            )
        return time.perf_counter() - t0

    run(ids, 4)  # warm up
    # Decode rate: difference of two runs cancels the prefill.
    t_short, t_long = run(ids, 2), run(ids, decode_tokens + 2)
    out = {"decode_b1_tok_s": decode_tokens / (t_long - t_short)}
    _say(f"  transformers batch-1 decode: {out['decode_b1_tok_s']:.1f} tok/s")
    t = run(ids.repeat(8, 1), decode_tokens)
    out["aggregate_8_tok_s"] = 8 * decode_tokens / t
    _say(f"  transformers batch of 8: {out['aggregate_8_tok_s']:.1f} tok/s aggregate")
    return out


def bench_engine(config: BenchConfig) -> dict[str, Any]:
    torch.set_num_threads(config.threads)
    resolved = resolve_model(config.model)
    from parallax.tokenizer import Tokenizer

    tok = Tokenizer.from_model(resolved)
    prompt = tok.encode_chat([{"role": "user", "content": "Tell me about the history of Rome."}])
    decode_tokens = 16 if config.quick else 64
    _say(f"bench engine: {resolved.name}, {config.threads} threads, fp32")
    bw = measure_bandwidth_gbs()
    _say(f"  memory bandwidth (copy): {bw:.1f} GB/s")
    mine = ours(resolved, prompt, decode_tokens, config.quick)
    ref = reference(resolved, prompt, decode_tokens)
    roofline = bw * 1e9 / mine["weight_bytes"]
    result = {
        "model": resolved.name,
        "threads": config.threads,
        "dtype": "float32",
        "decode_tokens": decode_tokens,
        "memory_bandwidth_gbs": bw,
        "roofline_b1_tok_s": roofline,
        "ours": mine,
        "transformers": ref,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ratios": {
            "b1_vs_transformers": mine["decode_b1_tok_s"] / ref["decode_b1_tok_s"],
            "agg16_vs_transformers_b1": mine["aggregate_16_tok_s"] / ref["decode_b1_tok_s"],
            "b1_fraction_of_roofline": mine["decode_b1_tok_s"] / roofline,
        },
    }
    for k, v in result["ratios"].items():
        _say(f"  {k}: {v:.2f}")
    return result
