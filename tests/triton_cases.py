"""The Triton kernels against their torch references, in Triton's CPU interpreter.

Run by tests/test_triton_kernels.py in a fresh process with TRITON_INTERPRET=1: the
interpreter must be on before triton is first imported (torch imports it early). On a
GPU, `parallax bench kernels` runs them compiled, on CUDA tensors
(PARALLAX_TRITON_DEVICE=cuda, no interpreter, `--noconftest` so the GPU machine needs
no coordinator packages).

Small shapes that hit the edges: KV block boundaries, a context of 1, GQA groups of
1, 4 and 8, split-K with empty splits, mixed lengths in one batch, bf16 and fp16
(fp32 accumulation), rotary with Llama-3 frequency scaling, rows wider than a block.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from parallax.models.spec import ModelSpec, RopeScaling

pytest.importorskip("triton")

# Where the cases' tensors live: the CPU under the interpreter, or a GPU.
DEV = "cuda" if os.environ.get("PARALLAX_TRITON_DEVICE") == "cuda" else "cpu"


@pytest.fixture(scope="module")
def tk():
    if DEV == "cuda" and not torch.cuda.is_available():
        pytest.fail("PARALLAX_TRITON_DEVICE=cuda but torch sees no CUDA device")
    if DEV == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("run with TRITON_INTERPRET=1 (tests/test_triton_kernels.py does)")
    import node.kernels.triton_attention as attention
    import node.kernels.triton_ops as ops

    return ops, attention


def _close(a, b, dtype):
    tol = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}[dtype]
    torch.testing.assert_close(a.float(), b.float(), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cols", [64, 80])  # 80: a row that is not a power of two
def test_add_rms_norm(tk, dtype, cols):
    from node.kernels import TorchKernels

    ops, _ = tk
    g = torch.Generator().manual_seed(cols)
    x, r = (torch.randn(5, cols, generator=g).to(DEV, dtype) for _ in range(2))
    w = torch.randn(cols, generator=g).to(DEV, dtype)
    ref_out, ref_res = TorchKernels().add_rms_norm(x, r, w, 1e-6)
    out, res = ops.add_rms_norm(x, r, w, 1e-6)
    _close(res, ref_res, dtype)
    _close(out, ref_out, dtype)
    only, same = ops.add_rms_norm(x, None, w, 1e-6)
    _close(only, TorchKernels().rms_norm(x, w, 1e-6), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_silu_mul(tk, dtype):
    ops, _ = tk
    x = torch.randn(3, 2, 2 * 48).to(DEV, dtype)
    gate, up = x.split(48, -1)
    _close(ops.silu_mul(x), F.silu(gate) * up, dtype)


@pytest.mark.parametrize("llama3", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotary_in_place_on_a_strided_view(tk, dtype, llama3):
    from node.model.rope import RotaryTable, apply_rotary

    ops, _ = tk
    scaling = RopeScaling(8.0, 1.0, 4.0, 32) if llama3 else None
    spec = ModelSpec("llama", 1, 64, 128, 4, 2, 16, 100, rope_scaling=scaling, rope_theta=500.0)
    table = RotaryTable(spec, 64, dtype, DEV)
    positions = torch.tensor([0, 1, 17, 63, 5], device=DEV)
    cos, sin = table.lookup(positions)
    d = spec.head_dim
    qkv = torch.randn(5, (4 + 2) * d).to(DEV, dtype)
    q = qkv[:, : 4 * d].view(5, 4, d)  # strided, as the model's split of qkv
    ref = apply_rotary(q.clone(), cos, sin)
    out = ops.rotary_(q, cos, sin)
    assert out.data_ptr() == qkv.data_ptr()
    _close(q, ref, dtype)


def _paged_case(lengths, hq, hkv, d, bs, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    nblk = [-(-n // bs) for n in lengths]
    slots = (sum(nblk) + 3) * bs
    k_cache = torch.randn(slots, hkv, d, generator=g).to(dtype)
    v_cache = torch.randn(slots, hkv, d, generator=g).to(dtype)
    perm = torch.randperm(slots // bs, generator=g).tolist()  # scattered physical blocks
    tables = torch.zeros(len(lengths), max(nblk), dtype=torch.int32)
    at = 0
    for i, n in enumerate(nblk):
        tables[i, :n] = torch.tensor(perm[at : at + n])
        at += n
    q = torch.randn(len(lengths), hq, d, generator=g).to(dtype)
    lens = torch.tensor(lengths, dtype=torch.int32)
    return tuple(t.to(DEV) for t in (q, k_cache, v_cache, tables, lens))


def _paged_reference(q, k_cache, v_cache, tables, lengths, bs, scale):
    out = []
    for i, n in enumerate(lengths.tolist()):
        blocks = tables[i, : -(-n // bs)].long()
        idx = (blocks[:, None] * bs + torch.arange(bs, device=blocks.device)).flatten()[:n]
        k, v = k_cache[idx].transpose(0, 1), v_cache[idx].transpose(0, 1)  # [Hkv, n, D]
        o = F.scaled_dot_product_attention(
            q[i][:, None].float(), k.float(), v.float(), scale=scale, enable_gqa=True
        )
        out.append(o[:, 0])
    return torch.stack(out)


@pytest.mark.parametrize("hq,hkv", [(4, 4), (8, 2), (8, 1)], ids=["group1", "group4", "group8"])
@pytest.mark.parametrize("splits", [1, 4])
def test_paged_decode_attention(tk, hq, hkv, splits):
    _, attention = tk
    bs, d = 4, 16
    # Length 1, exactly one block, one past a block boundary, and a longer context.
    lengths = [1, bs, bs + 1, 3 * bs + 2]
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        case = _paged_case(lengths, hq, hkv, d, bs, dtype, seed=hq + splits)
        q, kc, vc, tables, lens = case
        got = attention.paged_decode_attention(q, kc, vc, tables, lens, bs, d**-0.5, splits)
        assert got.dtype == dtype
        _close(got, _paged_reference(q, kc, vc, tables, lens, bs, d**-0.5), dtype)


def test_paged_decode_attention_head_dim_not_a_power_of_two(tk):
    _, attention = tk
    q, kc, vc, tables, lens = _paged_case([3, 9], 4, 2, 24, 8, torch.float32)
    got = attention.paged_decode_attention(q, kc, vc, tables, lens, 8, 0.2)
    _close(got, _paged_reference(q, kc, vc, tables, lens, 8, 0.2), torch.float32)


def test_an_engine_on_triton_kernels_gives_the_torch_engine_tokens(tk, tmp_path):
    """The whole seam: a tiny Llama decoding a batch of mixed lengths (paged decode
    attention over block tables of 4 tokens, split-K, fused norms, rotary in place)."""
    from node.engine.engine import LocalEngine
    from node.kernels import TorchKernels
    from node.kernels.triton_kernels import TritonKernels
    from node.weights import load_shard_model
    from parallax.config.generate import EngineConfig
    from parallax.models.registry import resolve_model
    from parallax.sampling import SamplingParams
    from parallax.types import LayerRange
    from tests.support.tiny_models import make_tiny_model

    r = resolve_model(str(make_tiny_model(tmp_path / "llama", "llama")))
    cfg = EngineConfig(kv_cache_mb=2, kv_block_size=4, device=DEV)
    prompts = [[5, 9, 2], [7] * 9, [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]]
    params = SamplingParams(max_tokens=6, ignore_eos=True)
    out = []
    for kernels in (TorchKernels(), TritonKernels()):
        model = load_shard_model(r, LayerRange(0, r.spec.num_layers), device=DEV, progress=False)
        model.kernels = kernels
        out.append(LocalEngine(model, cfg, ()).generate(prompts, params))
    assert out[0] == out[1]
