"""`parallax bench engine`: our engine against transformers on the same model and threads."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from typing import Any

import torch

from parallax.config.bench import BenchConfig
from parallax.config.generate import EngineConfig
from parallax.errors import ConfigError
from parallax.models.registry import resolve_model
from parallax.sampling import SamplingParams
from parallax.types import LayerRange


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# The clock the decode timings read: `--clock wall` (perf_counter) or `cpu` (process
# time; with one thread it is the work the process did, whatever else runs).
_now = time.perf_counter


def measure_bandwidth_gbs(seconds: float = 1.0) -> float:
    src = torch.empty(64 * 2**20 // 4, dtype=torch.float32).uniform_()
    dst = torch.empty_like(src)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        dst.copy_(src)
        n += 1
    # A copy reads and writes every byte.
    return 2 * src.numel() * 4 * n / (time.perf_counter() - t0) / 1e9


# Variants of our engine: (compute dtype, --weights, --compile).
VARIANTS = {
    "bf16": ("bfloat16", "auto", False),
    "q8": ("float32", "q8", False),
    "q4": ("float32", "q4", False),
    "compile": ("float32", "auto", True),
    "bf16_q4": ("bfloat16", "q4", False),
    "q8_compile": ("float32", "q8", True),
    "q4_compile": ("float32", "q4", True),
    "bf16_compile": ("bfloat16", "auto", True),
    "bf16_q4_compile": ("bfloat16", "q4", True),
}


def load_ours(resolved, dtype: str = "float32", weights: str = "auto", compile: bool = False):
    from node.engine.engine import DTYPES, LocalEngine
    from node.weights import load_shard_model

    layers = LayerRange(0, resolved.spec.num_layers)
    model = load_shard_model(resolved, layers, DTYPES[dtype], progress=False, weights=weights)
    cfg = EngineConfig(
        kv_cache_mb=512,
        max_batch_tokens=512,
        max_running=64,
        dtype=dtype,
        weights=weights,
        compile=compile,
    )
    return LocalEngine(model, cfg, ())


def ours_b1(eng, prompt: list[int], tokens: int) -> float:
    eng.add_request("b1", prompt, SamplingParams(max_tokens=tokens))
    eng.step()  # prefill: timed separately as TTFT
    t0, n = _now(), 0
    while eng.has_work():
        n += len(eng.step())
    return n / (_now() - t0)


def ours_aggregate(eng, prompt: list[int], tokens: int, conc: int) -> float:
    t0 = _now()
    res = eng.generate([prompt] * conc, SamplingParams(max_tokens=tokens))
    return sum(map(len, res)) / (_now() - t0)


def ours_ttft(eng, prompt: list[int]) -> float:
    long_prompt = (prompt * (512 // len(prompt) + 1))[:512]
    t0 = _now()
    eng.add_request("ttft", long_prompt, SamplingParams(max_tokens=1))
    while eng.has_work():
        eng.step()
    return _now() - t0


def mixed_cuts(eng, shared: bool, batch: int = 16, steps: int = 8) -> float:
    """Decode step time (ms) of `batch` requests, half cut after half the layers (a hop
    that forwards from mid-shard), half running them all: one shared pass over the
    layers (`run_groups`) or one pass per cut, as a node ran them before."""
    from node.engine.runner import Chunk

    runner, spec = eng.runner, eng.model.spec
    cuts = [LayerRange(0, spec.num_layers // 2), LayerRange(0, spec.num_layers)]
    ids = [f"cut{i}" for i in range(batch)]
    for i, rid in enumerate(ids):
        runner.run([Chunk(rid, 0, 32, False, tuple(range(3, 35)))], None, cuts[i % 2])
    elapsed = 0.0
    for s in range(steps):
        groups = [
            ([Chunk(rid, 32 + s, 1, False, (7,)) for rid in ids[j::2]], None, cut)
            for j, cut in enumerate(cuts)
        ]
        for rid in ids:  # run_groups expects the step's KV reserved, as a node does
            runner.kv.grow(rid, 33 + s)
        t0 = _now()
        if shared:
            runner.run_groups(groups)
        else:
            for g in groups:
                runner.run(*g)
        elapsed += _now() - t0
    for rid in ids:
        runner.kv.free(rid)
    return elapsed / steps * 1e3


def load_reference(resolved):
    import transformers as tf

    path = resolved.path
    if resolved.format == "hf":
        return tf.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    return tf.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    ).eval()


def ref_generate(ref, batch: torch.Tensor, new: int) -> float:
    t0 = _now()
    with torch.no_grad():
        ref.generate(
            batch,
            attention_mask=torch.ones_like(batch),
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=0,
        )
    return _now() - t0


def ref_b1(ref, prompt: list[int], tokens: int) -> float:
    ids = torch.tensor([prompt])
    # Decode rate: the difference of two runs cancels the prefill.
    return tokens / (ref_generate(ref, ids, tokens + 2) - ref_generate(ref, ids, 2))


def ref_aggregate(ref, prompt: list[int], tokens: int, batch: int) -> float:
    return batch * tokens / ref_generate(ref, torch.tensor([prompt] * batch), tokens)


def _variant_fns(variants: dict, prompt: list[int], tokens: int):
    for name, v in variants.items():
        yield f"{name}_b1", lambda v=v: ours_b1(v, prompt, tokens)
        yield f"{name}_agg16", lambda v=v: ours_aggregate(v, prompt, tokens, 16)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def bench_engine(config: BenchConfig) -> dict[str, Any]:
    global _now
    if config.clock == "cpu" and config.threads != 1:
        raise ConfigError(
            "--clock cpu needs --threads 1: with more threads process time counts every "
            "thread's spinning too"
        )
    _now = time.process_time if config.clock == "cpu" else time.perf_counter
    torch.set_num_threads(config.threads)
    resolved = resolve_model(config.model)
    from parallax.tokenizer import Tokenizer

    tok = Tokenizer.from_model(resolved)
    prompt = tok.encode_chat([{"role": "user", "content": "Tell me about the history of Rome."}])
    tokens = 16 if config.quick else 48
    rounds = 1 if config.quick else 3
    _say(
        f"bench engine: {resolved.name}, {config.threads} threads, ours {config.dtype} vs "
        f"reference float32, {rounds} rounds, {config.clock} clock"
    )
    eng, ref = load_ours(resolved, config.dtype), load_reference(resolved)
    eng.generate([prompt], SamplingParams(max_tokens=4))  # warm up both
    variants = {}
    for name in filter(None, config.variants.split(",")):
        if name not in VARIANTS:
            raise ConfigError(f"--variants: {name!r} is not one of {', '.join(VARIANTS)}")
        variants[name] = load_ours(resolved, *VARIANTS[name])
        # Warm up: a compiled variant compiles here, not inside a timed round: one graph
        # for batch 1, one for larger batches of equal lengths and one with a mask for
        # mixed lengths (the 16 streams' prefills end a step apart: mixed from then on).
        for batch in ([prompt] * 2, [prompt, prompt[:-1]], [prompt]):
            variants[name].generate(batch, SamplingParams(max_tokens=4))
    ref_generate(ref, torch.tensor([prompt]), 4)
    # Rounds interleave ours and the reference, so load from other processes on this
    # shared machine hits both alike; medians over rounds are reported.
    m: dict[str, list[float]] = {}
    for r in range(rounds):
        for name, fn in (
            ("ours_b1", lambda: ours_b1(eng, prompt, tokens)),
            ("ref_b1", lambda: ref_b1(ref, prompt, tokens)),
            ("ours_agg4", lambda: ours_aggregate(eng, prompt, tokens, 4)),
            ("ours_agg16", lambda: ours_aggregate(eng, prompt, tokens, 16)),
            ("ref_agg8", lambda: ref_aggregate(ref, prompt, tokens, 8)),
            ("ours_ttft512", lambda: ours_ttft(eng, prompt)),
            ("mixed_cuts_separate_ms", lambda: mixed_cuts(eng, shared=False)),
            ("mixed_cuts_shared_ms", lambda: mixed_cuts(eng, shared=True)),
            ("bandwidth_gbs", measure_bandwidth_gbs),
            *_variant_fns(variants, prompt, tokens),
        ):
            m.setdefault(name, []).append(fn())
        _say(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in m.items()))
    med = {k: median(v) for k, v in m.items()}
    from node.model.quant import module_bytes

    weight_bytes = module_bytes(eng.model)
    roofline = med["bandwidth_gbs"] * 1e9 / weight_bytes
    result = {
        "model": resolved.name,
        "threads": config.threads,
        "dtype": config.dtype,
        "reference_dtype": "float32",
        "clock": config.clock,
        "decode_tokens": tokens,
        "rounds": rounds,
        "median": med,
        "all": m,
        "roofline_b1_tok_s": roofline,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ratios": {
            "b1_vs_transformers_b1": med["ours_b1"] / med["ref_b1"],
            "agg16_vs_transformers_b1": med["ours_agg16"] / med["ref_b1"],
            "agg16_vs_transformers_batch8": med["ours_agg16"] / med["ref_agg8"],
            "b1_fraction_of_roofline": med["ours_b1"] / roofline,
            "mixed_cuts_shared_vs_separate_step": med["mixed_cuts_shared_ms"]
            / med["mixed_cuts_separate_ms"],
        },
    }
    for name, v_eng in variants.items():
        result["ratios"][f"{name}_b1_vs_transformers_b1"] = med[f"{name}_b1"] / med["ref_b1"]
        result["ratios"][f"{name}_agg16_vs_transformers_batch8"] = (
            med[f"{name}_agg16"] / med["ref_agg8"]
        )
        result.setdefault("weight_bytes", {})[name] = module_bytes(v_eng.model)
    for k, v in result["ratios"].items():
        _say(f"  {k}: {v:.2f}")
    _say(f"  peak RSS {result['peak_rss_mib']:.0f} MiB (both models loaded)")
    return result
