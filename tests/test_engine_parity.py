"""Golden parity: our engine equals transformers, and sharded runs equal local runs."""

from __future__ import annotations

import pytest
import torch

from tests.support.engine import greedy_pipeline, shard_runners
from tests.support.tiny_models import load_reference, make_tiny_model

PROMPT = [5, 17, 33, 99, 100, 3, 7, 250, 12]
STEPS = 21  # prefill + 20 decode steps


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "mistral"])
def test_logits_match_transformers(tiny_models, family):
    path = tiny_models[family]
    tokens, ours = greedy_pipeline(shard_runners(path, []), PROMPT, STEPS)
    ref = load_reference(path)
    with torch.no_grad():
        full = ref(torch.tensor([PROMPT + tokens])).logits[0]
    # Step i's logits predict the token after position len(PROMPT) - 1 + i.
    for i, got in enumerate(ours):
        want = full[len(PROMPT) - 1 + i]
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), f"step {i} differs"


def test_mistral_sliding_window_matches_transformers(tmp_path):
    """A window of 6 positions, shorter than the prompt: prefill in one shot, in chunks
    (a chunk's queries reach back past its own start) and 20 decode steps past it."""
    path = make_tiny_model(tmp_path / "swa", "mistral", sliding_window=6)
    ref = load_reference(path)
    assert ref.config.sliding_window == 6
    tokens, ours = greedy_pipeline(shard_runners(path, [2]), PROMPT, STEPS)
    with torch.no_grad():
        full = ref(torch.tensor([PROMPT + tokens])).logits[0]
        unwindowed = load_reference(make_tiny_model(tmp_path / "full", "mistral"))
        plain = unwindowed(torch.tensor([PROMPT + tokens])).logits[0]
    for i, got in enumerate(ours):
        want = full[len(PROMPT) - 1 + i]
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), f"step {i} differs"
    # The window matters here: without it the same weights give other logits.
    assert not torch.allclose(full[-1], plain[-1], atol=1e-3)
    from node.engine.runner import Chunk

    (chunked,) = shard_runners(path, [])
    chunked.run([Chunk("a", 0, 4, False, tuple(PROMPT[:4]))])
    chunked.run([Chunk("a", 4, 3, False, tuple(PROMPT[4:7]))])
    got = chunked.run([Chunk("a", 7, 2, True, tuple(PROMPT[7:]))])
    assert torch.allclose(got[0], full[len(PROMPT) - 1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("cuts", [[2], [1, 3], [1, 2, 3]])
def test_shard_chaining_equals_full_model(tiny_models, cuts):
    path = tiny_models["qwen2"]
    want_tokens, want_logits = greedy_pipeline(shard_runners(path, []), PROMPT, 12)
    got_tokens, got_logits = greedy_pipeline(shard_runners(path, cuts), PROMPT, 12)
    assert got_tokens == want_tokens
    for a, b in zip(got_logits, want_logits, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


def test_chunked_prefill_equals_one_shot(tiny_models):
    from node.engine.runner import Chunk

    (one,) = shard_runners(tiny_models["llama"], [])
    (chunked,) = shard_runners(tiny_models["llama"], [])
    want = one.run([Chunk("a", 0, len(PROMPT), True, tuple(PROMPT))])
    chunked.run([Chunk("a", 0, 4, False, tuple(PROMPT[:4]))])
    chunked.run([Chunk("a", 4, 3, False, tuple(PROMPT[4:7]))])
    got = chunked.run([Chunk("a", 7, 2, True, tuple(PROMPT[7:]))])
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)


def test_reassignment_reuses_overlapping_layers_and_matches_a_fresh_load(tiny_models):
    from node.weights import load_shard_model
    from parallax.models.registry import resolve_model
    from parallax.types import LayerRange

    r = resolve_model(str(tiny_models["qwen3"]))
    old = load_shard_model(r, LayerRange(0, 3), progress=False)
    moved = load_shard_model(r, LayerRange(1, 4), progress=False, reuse=old)
    fresh = load_shard_model(r, LayerRange(1, 4), progress=False)
    # Layers 1 and 2 are the very same tensors, not re-read copies.
    a, b = moved.layers[0].mlp.down_proj.weight, old.layers[1].mlp.down_proj.weight
    assert a.data_ptr() == b.data_ptr()
    for (k, a), (_, b) in zip(moved.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_shards_track_fp32(tiny_models, dtype):
    (ref,) = shard_runners(tiny_models["llama"], [])
    (half,) = shard_runners(tiny_models["llama"], [], dtype=dtype)
    _, want = greedy_pipeline([ref], PROMPT, 4)
    _, got = greedy_pipeline([half], PROMPT, 4)
    # Same first-step distribution within half-precision noise.
    assert got[0].dtype == torch.float32
    assert torch.allclose(torch.softmax(got[0], -1), torch.softmax(want[0], -1), atol=2e-2)
