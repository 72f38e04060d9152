"""bf16 projections packed for oneDNN on CPU give the dense layer's outputs; a bf16
engine packs them and decodes exactly as an unpacked one; cheaper rotary and RMSNorm
forms equal the reference ones."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from node.model.packed import PackedEmbedding, PackedLinear, can_pack, pack_linears
from node.model.quant import module_bytes
from node.weights import load_shard_model
from parallax.models.registry import resolve_model
from parallax.types import LayerRange
from tests.support.engine import greedy_pipeline, shard_runners
from tests.support.tiny_models import make_tiny_model

pytestmark = pytest.mark.skipif(
    not can_pack("cpu", torch.bfloat16), reason="torch built without oneDNN"
)
PROMPT = [5, 17, 33, 99, 100, 3, 7, 250, 12]


@pytest.mark.parametrize("bias", [False, True])
def test_packed_linear_equals_the_dense_layer_at_any_row_count(bias):
    torch.manual_seed(0)
    dense = nn.Linear(96, 160, bias=bias).to(torch.bfloat16)
    packed = PackedLinear(dense)
    for rows in (1, 3, 16, 40):
        x = torch.randn(rows, 96).to(torch.bfloat16)
        assert torch.equal(packed(x), dense(x)), rows
    x = torch.randn(2, 5, 96).to(torch.bfloat16)  # leading dimensions kept
    assert torch.equal(packed(x), dense(x))
    # The state dict shows the dense weight; the bytes count the packed copy.
    assert torch.equal(packed.state_dict()["weight"], dense.weight)
    assert module_bytes(packed) == module_bytes(dense)


def test_bf16_runner_packs_and_decodes_as_unpacked(tiny_models, monkeypatch):
    path = tiny_models["llama"]
    (packed,) = shard_runners(path, [], dtype="bfloat16")
    kinds = {type(m) for m in packed.model.modules()}
    assert PackedLinear in kinds and nn.Linear not in kinds
    with monkeypatch.context() as m:
        m.setattr("node.engine.runner.can_pack", lambda *a: False)
        (plain,) = shard_runners(path, [], dtype="bfloat16")
    assert not any(isinstance(x, PackedLinear) for x in plain.model.modules())
    want_tokens, want = greedy_pipeline([plain], PROMPT, 8)
    got_tokens, got = greedy_pipeline([packed], PROMPT, 8)
    assert got_tokens == want_tokens
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)


def test_a_tied_head_is_packed_once_and_a_packed_shard_can_be_reused(tmp_path):
    # Hidden 64 (a multiple of 32, as the view needs), vocab 260 (oneDNN pads the last block).
    path = make_tiny_model(tmp_path / "tied", "qwen2", tie_word_embeddings=True)
    r = resolve_model(str(path))
    model = load_shard_model(r, LayerRange(0, 4), torch.bfloat16, progress=False)
    table = model.embed_tokens.weight.detach().clone()
    assert model.lm_head.weight.data_ptr() == model.embed_tokens.weight.data_ptr()
    before = module_bytes(model)
    ids = torch.tensor([0, 1, 31, 32, 200, 259, 7])
    x = torch.randn(5, table.shape[1]).to(torch.bfloat16)
    want_logits, want_rows = model.lm_head(x), model.embed_tokens(ids)
    assert pack_linears(model, model.embed_tokens.weight) == 4 * 4 + 1  # 4 per layer, head
    assert type(model.lm_head) is PackedLinear
    assert type(model.embed_tokens) is PackedEmbedding
    # The embedding reads the packed table: every row, the head's outputs, bytes once.
    assert torch.equal(model.embed_tokens(torch.arange(table.shape[0])), table)
    assert torch.equal(model.embed_tokens(ids), want_rows)
    assert torch.equal(model.embed_tokens(ids.view(1, -1)), want_rows.view(1, *want_rows.shape))
    assert torch.equal(model.lm_head(x), want_logits)
    assert module_bytes(model) == before
    moved = load_shard_model(r, LayerRange(1, 4), torch.bfloat16, progress=False, reuse=model)
    fresh = load_shard_model(r, LayerRange(1, 4), torch.bfloat16, progress=False)
    for (k, a), (_, b) in zip(moved.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    whole = load_shard_model(r, LayerRange(0, 4), torch.bfloat16, progress=False, reuse=model)
    assert torch.equal(whole.embed_tokens.weight, table)


def test_a_tied_head_stays_dense_where_the_packed_layout_is_unknown(tmp_path, monkeypatch):
    path = make_tiny_model(tmp_path / "tied", "qwen2", tie_word_embeddings=True)
    r = resolve_model(str(path))
    model = load_shard_model(r, LayerRange(0, 4), torch.bfloat16, progress=False)
    monkeypatch.setattr("node.model.packed._rows_view", lambda *a: None)
    assert pack_linears(model, model.embed_tokens.weight) == 4 * 4
    assert type(model.lm_head) is nn.Linear and type(model.embed_tokens) is nn.Embedding


def test_the_rows_view_rejects_a_layout_it_does_not_read():
    from node.model.packed import _dense_rows, _rows_view

    torch.manual_seed(0)
    w = torch.randn(256, 64).to(torch.bfloat16)
    packed = torch.ops.mkldnn._reorder_linear_weight(w, 16)
    view = _rows_view(packed, w)
    if view is not None:  # a layout we read: its rows are w's
        assert torch.equal(_dense_rows(view), w)
    # Same packed bytes, other values: the check must refuse them.
    assert _rows_view(packed, w.flip(0)) is None


def test_signed_rotary_and_fused_rms_norm_equal_the_reference_forms():
    from node.kernels.torch_kernels import TorchKernels, apply_rotary, apply_rotary_signed
    from node.model.rope import RotaryTable
    from parallax.models.spec import ModelSpec

    spec = ModelSpec("llama", 1, 64, 128, 4, 2, 16, 100)
    table = RotaryTable(spec, 64, torch.float32, "cpu")
    positions = torch.tensor([0, 1, 17, 63])
    x = torch.randn(4, 6, 16)
    want = apply_rotary(x, *table.lookup(positions))
    got = apply_rotary_signed(x, *table.lookup(positions, signed=True))
    assert torch.allclose(got, want, atol=1e-6, rtol=0)
    assert not torch.allclose(got, apply_rotary(x, *table.lookup(positions, signed=True)))
    k = TorchKernels()
    for dtype in (torch.float32, torch.bfloat16):
        h, w = (torch.randn(5, 64) * 3).to(dtype), torch.randn(64).to(dtype)
        h32 = h.float()
        ref = w * (h32 * torch.rsqrt(h32.pow(2).mean(-1, keepdim=True) + 1e-6)).to(dtype)
        assert torch.equal(k.rms_norm(h, w, 1e-6), ref), dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_signed_rotary_is_bit_equal_and_batch_invariant(dtype):
    # A sharded run must equal the local one token for token, and their steps batch
    # tokens differently: the rotary of a row may not depend on the rows beside it
    # (addcmul's fused path in bfloat16 did, and the bf16 chain parity test caught it).
    from node.kernels.torch_kernels import apply_rotary, apply_rotary_signed
    from node.model.rope import RotaryTable
    from parallax.models.spec import ModelSpec

    spec = ModelSpec("llama", 1, 576, 1536, 9, 3, 64, 100)
    table = RotaryTable(spec, 512, dtype, "cpu")
    torch.manual_seed(0)
    x = torch.randn(37, 12, 64).to(dtype)
    positions = torch.arange(37) * 7 % 512
    whole = apply_rotary_signed(x, *table.lookup(positions, signed=True))
    assert torch.equal(whole, apply_rotary(x, *table.lookup(positions)))
    for n in (1, 3, 16, 17):
        part = apply_rotary_signed(x[:n], *table.lookup(positions[:n], signed=True))
        assert torch.equal(part, whole[:n]), n
