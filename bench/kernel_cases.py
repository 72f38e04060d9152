"""The cases `parallax bench kernels` times (bench/kernels.py runs them): each Triton
kernel and its torch reference on the same inputs, a device-to-device copy, and the
engine's decode on a random Llama checkpoint written for the run."""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

EPS = 1e-5

# Llama-3.2-1B's shapes; the engine part writes a random checkpoint of them.
LLAMA_1B = dict(
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=64,
    vocab_size=128256,
    tie_word_embeddings=True,
    rope_theta=500000.0,
    rms_norm_eps=EPS,
    max_position_embeddings=131072,
    rope_scaling={
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
)
# --quick: the same parts on shapes the interpreter gets through in seconds (GQA group 4).
TINY = {
    **LLAMA_1B,
    **dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        vocab_size=260,
    ),
}


@dataclass(frozen=True)
class Rig:
    """What one run measures: the device, shapes, batches and repetitions."""

    device: str
    shape: dict
    batches: tuple[int, ...]
    context: int  # every sequence's length in the uniform attention cases
    mixed_max: int  # mixed cases: lengths drawn from [16, mixed_max]
    copy_bytes: int
    rounds: int
    engine_batches: tuple[int, ...]
    prompt: int
    steps: int
    tests_filter: str  # pytest -k of the kernel tests; "" = all


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- 2 and 3. each kernel against torch; attention against a copy ----


def _paged(lengths: list[int], shape: dict, dtype, device, block: int = 16):
    """A paged K/V cache with each sequence's blocks scattered, as the engine's are, and
    both views of it: block tables + lengths (Triton) and padded slots + mask (torch)."""
    from node.kernels import AttentionMeta

    g = torch.Generator().manual_seed(len(lengths) + max(lengths))
    hkv, d = shape["num_key_value_heads"], shape["head_dim"]
    nblk = [-(-n // block) for n in lengths]
    perm = torch.randperm(sum(nblk), generator=g)
    tables = torch.zeros(len(lengths), max(nblk), dtype=torch.int32)
    at = 0
    for i, n in enumerate(nblk):
        tables[i, :n] = perm[at : at + n].to(torch.int32)
        at += n
    k_cache = torch.randn(sum(nblk) * block, hkv, d, device=device, dtype=dtype)
    v_cache = torch.randn_like(k_cache)
    q = torch.randn(len(lengths), shape["num_attention_heads"], d, device=device, dtype=dtype)
    lmax = max(lengths)
    pos = torch.arange(lmax)
    slots = tables.long()[:, pos // block] * block + pos % block
    visible = pos[None, :] < torch.tensor(lengths)[:, None]
    slots = torch.where(visible, slots, slots[:, :1])  # padding reads a valid slot, masked
    mask = None if bool(visible.all()) else visible.view(len(lengths), 1, 1, lmax).to(device)
    meta = AttentionMeta(
        slot_mapping=torch.zeros(0, dtype=torch.long, device=device),
        num_decode=len(lengths),
        decode_slots=slots.to(device),
        decode_mask=mask,
        prefills=[],
    )
    lens = torch.tensor(lengths, dtype=torch.int32, device=device)
    kv_bytes = 2 * sum(lengths) * hkv * d * k_cache.element_size()
    return q, k_cache, v_cache, tables.to(device), lens, meta, kv_bytes, block


def kernel_cases(rig: Rig, dtype) -> list[tuple[str, int, str, dict, Any, Any]]:
    """(kernel, batch, shape note, extra, triton fn, torch fn) for every case."""
    from node.kernels import TorchKernels
    from node.kernels.triton_attention import paged_decode_attention
    from node.kernels.triton_ops import add_rms_norm, rotary_, silu_mul
    from node.model.rope import RotaryTable
    from parallax.models.spec import ModelSpec

    s, dev, ref = rig.shape, rig.device, TorchKernels()
    h, inter, d = s["hidden_size"], s["intermediate_size"], s["head_dim"]
    heads = s["num_attention_heads"] + s["num_key_value_heads"]
    spec = ModelSpec.from_hf_config({"model_type": "llama", **s})
    table = RotaryTable(spec, rig.mixed_max + 1, dtype, dev)
    cases = []

    def rand(*size):
        return torch.randn(*size, device=dev, dtype=dtype)

    for b in rig.batches:
        x, r, w = rand(b, h), rand(b, h), rand(h)
        cases.append(
            (
                "add_rms_norm",
                b,
                f"[{b}, {h}]",
                {},
                lambda x=x, r=r, w=w: add_rms_norm(x, r, w, EPS),
                lambda x=x, r=r, w=w: ref.add_rms_norm(x, r, w, EPS),
            )
        )
        gu = rand(b, 2 * inter)
        cases.append(
            (
                "silu_mul",
                b,
                f"[{b}, 2x{inter}]",
                {},
                lambda gu=gu: silu_mul(gu),
                lambda gu=gu: ref.silu_mul(gu),
            )
        )
        # q and k as the model rotates them: a strided view of the qkv projection's rows.
        qk = rand(b, (heads + s["num_key_value_heads"]) * d)[:, : heads * d].view(b, heads, d)
        positions = torch.randint(0, rig.context, (b,), device=dev)
        cos, sin = table.lookup(positions)
        _, sin_signed = table.lookup(positions, signed=True)
        cases.append(
            (
                "rotary",
                b,
                f"[{b}, {heads}, {d}]",
                {},
                lambda qk=qk, c=cos, sn=sin: rotary_(qk, c, sn),
                lambda qk=qk, c=cos, sn=sin_signed: ref.rotary(qk, c, sn),
            )
        )
    g = torch.Generator().manual_seed(0)
    attn = [(b, [rig.context] * b, f"ctx {rig.context}") for b in rig.batches]
    attn += [
        (
            b,
            torch.randint(16, rig.mixed_max + 1, (b,), generator=g).tolist(),
            f"mixed 16-{rig.mixed_max}",
        )
        for b in rig.batches
        if b > 1
    ]
    scale = d**-0.5
    for b, lengths, note in attn:
        q, kc, vc, tables, lens, meta, kv_bytes, block = _paged(lengths, s, dtype, dev)
        cases.append(
            (
                "decode_attention",
                b,
                note,
                {"kv_bytes": kv_bytes, "tokens": sum(lengths)},
                lambda q=q, kc=kc, vc=vc, t=tables, n=lens, bs=block: paged_decode_attention(
                    q, kc, vc, t, n, bs, scale
                ),
                lambda q=q, kc=kc, vc=vc, m=meta: ref._decode(q, kc, vc, m, scale),
            )
        )
    return cases


def _rel_diff(got, want) -> float:
    """Largest |got - want| over the largest |want|: both sides compute the same thing."""
    got, want = ((x if isinstance(x, tuple) else (x,)) for x in (got, want))
    return max(
        float((g.float() - w.float()).abs().max() / w.float().abs().max().clamp_min(1e-30))
        for g, w in zip(got, want, strict=True)
    )


def time_kernels(rig: Rig, timer) -> tuple[list[dict], dict]:
    dtype = torch.bfloat16
    cases = kernel_cases(rig, dtype)
    src = torch.empty(rig.copy_bytes // 2, dtype=dtype, device=rig.device).uniform_()
    dst = torch.empty_like(src)
    diffs = []
    for *_, tri, ref in cases:  # torch's first: rotary rotates in place, Triton's after it
        want = ref()
        diffs.append(_rel_diff(tri(), want))
    raw: dict[str, list[float]] = {}
    for r in range(rig.rounds):  # rounds interleave every case with the copy
        raw.setdefault("copy", []).append(timer(lambda: dst.copy_(src)))
        for kernel, b, note, _, tri, ref in cases:
            key = f"{kernel} b{b} {note}"
            raw.setdefault(f"{key} triton", []).append(timer(tri))
            raw.setdefault(f"{key} torch", []).append(timer(ref))
        say(f"  kernels round {r + 1}/{rig.rounds} done")
    copy_us = statistics.median(raw["copy"])
    copy_gbs = 2 * rig.copy_bytes / copy_us / 1e3  # a copy reads and writes every byte
    rows = []
    for (kernel, b, note, extra, _, _), diff in zip(cases, diffs, strict=True):
        key = f"{kernel} b{b} {note}"
        tri, ref = statistics.median(raw[f"{key} triton"]), statistics.median(raw[f"{key} torch"])
        row = {"kernel": kernel, "batch": b, "shape": note, "triton_us": tri, "torch_us": ref}
        row["speedup"] = ref / tri
        row["max_rel_diff"] = diff
        if "kv_bytes" in extra:
            row.update(extra)
            for impl, us in (("triton", tri), ("torch", ref)):
                row[f"{impl}_gbs"] = extra["kv_bytes"] / us / 1e3
                row[f"{impl}_fraction_of_copy"] = row[f"{impl}_gbs"] / copy_gbs
        rows.append(row)
    copy = {"bytes": rig.copy_bytes, "us": copy_us, "gbs": copy_gbs, "rounds": raw["copy"]}
    return rows, {"copy": copy, "raw_us": raw}


# ---- 4. the engine ----


def write_random_llama(folder: Path, shape: dict, device: str, seed: int = 0) -> Path:
    """A random Llama checkpoint in Hugging Face layout, bf16 safetensors (std 0.02)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **shape}
    (folder / "config.json").write_text(json.dumps({**cfg, "torch_dtype": "bfloat16"}))
    h, inter, d = shape["hidden_size"], shape["intermediate_size"], shape["head_dim"]
    nq, nkv = shape["num_attention_heads"] * d, shape["num_key_value_heads"] * d
    shapes = {"model.embed_tokens.weight": (shape["vocab_size"], h), "model.norm.weight": (h,)}
    for i in range(shape["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for name, size in (("q", nq), ("k", nkv), ("v", nkv)):
            shapes[f"{p}self_attn.{name}_proj.weight"] = (size, h)
        shapes[f"{p}self_attn.o_proj.weight"] = (h, nq)
        shapes[f"{p}mlp.gate_proj.weight"] = shapes[f"{p}mlp.up_proj.weight"] = (inter, h)
        shapes[f"{p}mlp.down_proj.weight"] = (h, inter)
        shapes[f"{p}input_layernorm.weight"] = shapes[f"{p}post_attention_layernorm.weight"] = (h,)
    torch.manual_seed(seed)
    tensors = {}
    for name, size in shapes.items():
        t = (
            torch.ones(size, device=device)
            if len(size) == 1
            else torch.randn(size, device=device) * 0.02
        )
        tensors[name] = t.to(torch.bfloat16).cpu()
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def time_engine(rig: Rig, copy_gbs: float) -> tuple[list[dict], dict]:
    from node.engine.engine import make_runner
    from node.engine.runner import Chunk
    from node.kernels import TorchKernels
    from node.kernels.triton_kernels import TritonKernels
    from node.model.quant import module_bytes
    from node.weights import load_shard_model
    from parallax.config.generate import EngineConfig
    from parallax.models.registry import resolve_model
    from parallax.types import LayerRange

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        resolved = resolve_model(
            str(write_random_llama(Path(tmp) / "llama", rig.shape, rig.device))
        )
        layers = LayerRange(0, resolved.spec.num_layers)
        max_pos = rig.prompt + rig.steps + 8
        model = load_shard_model(resolved, layers, torch.bfloat16, rig.device, False, max_pos)
    took = time.perf_counter() - t0
    say(f"  random {resolved.spec.num_layers}-layer Llama written and loaded in {took:.1f} s")
    runner = make_runner(
        model,
        EngineConfig(
            device=rig.device, dtype="bfloat16", kv_cache_mb=2048 if rig.device == "cuda" else 8
        ),
    )
    sync = torch.cuda.synchronize if rig.device == "cuda" else (lambda: None)
    prompt = tuple(range(3, 3 + rig.prompt))

    def decode_rate(batch: int, tag: str) -> float:
        ids = [f"{tag}-{i}" for i in range(batch)]
        for i in range(0, batch, 8):  # prefill 8 sequences per step
            runner.run([Chunk(r, 0, len(prompt), True, prompt) for r in ids[i : i + 8]])
        at = len(prompt)
        for _ in range(2):  # warm-up steps, not timed
            runner.run([Chunk(r, at, 1, True, (7,)) for r in ids])
            at += 1
        sync()
        t = time.perf_counter()
        for _ in range(rig.steps):
            runner.run([Chunk(r, at, 1, True, (7,)) for r in ids])
            at += 1
        sync()
        elapsed = time.perf_counter() - t
        for r in ids:
            runner.kv.free(r)
        return batch * rig.steps / elapsed

    raw: dict[str, list[float]] = {}
    for r in range(rig.rounds):
        for name, kernels in (("triton", TritonKernels()), ("torch", TorchKernels())):
            model.kernels = kernels  # the runner reads it every step
            for b in rig.engine_batches:
                raw.setdefault(f"{name} b{b}", []).append(decode_rate(b, f"r{r}{name}"))
        say(
            f"  engine round {r + 1}/{rig.rounds}: "
            + ", ".join(f"{k} {v[-1]:.1f}" for k, v in raw.items())
        )
    weight_bytes = module_bytes(model)
    roofline = copy_gbs * 1e9 / weight_bytes  # batch-1 tok/s if every weight byte streams once
    rows = []
    for b in rig.engine_batches:
        tri, ref = statistics.median(raw[f"triton b{b}"]), statistics.median(raw[f"torch b{b}"])
        row = {"batch": b, "triton_tok_s": tri, "torch_tok_s": ref, "speedup": tri / ref}
        row["cuda_graphs"] = "not implemented"  # the engine has no CUDA-graph path yet
        row["triton_fraction_of_weight_roofline"] = tri / b / roofline if b == 1 else None
        rows.append(row)
    info = {"weight_bytes": weight_bytes, "roofline_b1_tok_s": roofline, "raw_tok_s": raw}
    info.update(prompt=rig.prompt, steps=rig.steps, layers=resolved.spec.num_layers)
    return rows, info
