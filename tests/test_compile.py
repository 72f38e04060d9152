"""--compile: torch.compile'd decode layers give the eager engine's tokens, and batch
sizes and context lengths that vary step to step do not recompile without bound."""

from __future__ import annotations

import pytest
import torch

from node.engine.engine import LocalEngine
from node.weights import load_shard_model
from parallax.config.generate import EngineConfig
from parallax.models.registry import resolve_model
from parallax.sampling import SamplingParams
from parallax.types import LayerRange
from tests.support.node import prompts


def _engine(path, **cfg) -> LocalEngine:
    r, ecfg = resolve_model(str(path)), EngineConfig(kv_cache_mb=8, **cfg)
    model = load_shard_model(r, LayerRange(0, r.spec.num_layers), torch.float32, progress=False)
    return LocalEngine(model, ecfg, ())


def test_compiled_decode_equals_eager_and_recompiles_stay_bounded(tiny_models):
    from torch._dynamo.utils import counters

    path = tiny_models["llama"]
    ps = prompts(5, seed=3)
    # Staggered lengths: the decode batch shrinks as requests finish (5, 4, 3, 2, 1).
    params = [SamplingParams(max_tokens=6 + 3 * i, ignore_eos=True) for i in range(len(ps))]
    expected = _engine(path).generate(ps, params)
    torch._dynamo.reset()
    counters.clear()
    eng = _engine(path, compile=True)
    assert eng.model.compiled is not None
    # Groups of 3 on 4 layers: one 3-layer graph and the one-layer remainder graph.
    eng.model.compile_decode(group=3)
    rows, graphs = [], eng.model.compiled

    def recorded(group, kv, x, *rest):
        rows.append(x.shape[0])
        return graphs(group, kv, x, *rest)

    eng.model.compiled = recorded
    assert eng.generate(ps, params) == expected
    # Decode steps of every batch size ran compiled (the prefills eager).
    assert {1, 2, 5} <= set(rows), sorted(set(rows))
    again = eng.generate(ps[:2], params[:2])
    assert again == expected[:2]
    # Decode steps run compiled: per group size one graph for batch 1 and one for every
    # larger batch and context length (dynamic from the start); nothing recompiles per
    # step or per layer.
    frames = counters["stats"]["unique_graphs"]
    assert 2 <= frames <= 4, f"{frames} compiled graphs"


@pytest.mark.e2e
def test_compiled_smollm2_matches_transformers_greedy(smollm2_path):
    """The golden parity check of tests/test_smollm2.py with --compile on."""
    import transformers as tf

    from parallax.tokenizer import Tokenizer

    r = resolve_model(str(smollm2_path))
    tok = Tokenizer.from_model(r)
    prompt = tok.encode_chat([{"role": "user", "content": "What is the capital of France?"}])
    ref = tf.AutoModelForCausalLM.from_pretrained(
        str(smollm2_path.parent), gguf_file=smollm2_path.name, dtype=torch.float32
    ).eval()
    with torch.no_grad():
        out = ref.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False)
    expected = out[0, len(prompt) :].tolist()
    eng = _engine(smollm2_path, compile=True)
    got = eng.generate([prompt], SamplingParams(max_tokens=24, ignore_eos=True))[0]
    n = min(len(got), len(expected))
    assert got[:n] == expected[:n]


def test_compile_groups_split_a_range_into_full_groups_then_single_layers(tiny_models):
    from node.model.transformer import _groups
    from parallax.errors import ConfigError

    assert _groups(0, 30, 6) == [(0, 6), (6, 12), (12, 18), (18, 24), (24, 30)]
    assert _groups(3, 11, 3) == [(3, 6), (6, 9), (9, 10), (10, 11)]
    assert _groups(4, 4, 6) == []
    r = resolve_model(str(tiny_models["llama"]))
    model = load_shard_model(r, LayerRange(0, r.spec.num_layers), torch.float32, progress=False)
    with pytest.raises(ConfigError, match="group"):
        model.compile_decode(group=0)


def test_compiled_bf16_decode_calls_the_packed_weights_and_equals_eager(tiny_models, monkeypatch):
    # bf16 on CPU packs the projections for oneDNN; the compiled graphs reach them through
    # the `parallax::packed_linear` op (an opaque oneDNN tensor cannot enter a graph).
    from node.model.packed import PackedLinear, can_pack

    if not can_pack("cpu", torch.bfloat16):
        pytest.skip("torch built without oneDNN")
    path = tiny_models["llama"]
    ps = prompts(4, seed=5)
    params = [SamplingParams(max_tokens=5 + 2 * i, ignore_eos=True) for i in range(len(ps))]

    def engine(compile: bool) -> LocalEngine:
        r = resolve_model(str(path))
        model = load_shard_model(
            r, LayerRange(0, r.spec.num_layers), torch.bfloat16, progress=False
        )
        return LocalEngine(
            model, EngineConfig(kv_cache_mb=8, dtype="bfloat16", compile=compile), ()
        )

    import node.model.packed as packed

    looked_up = []

    class Counting(dict):  # the op's weight lookups; eager calls the weights directly
        def __getitem__(self, key):
            looked_up.append(key)
            return super().__getitem__(key)

    expected = engine(False).generate(ps, params)
    monkeypatch.setattr(packed, "_BY_KEY", Counting())
    eng = engine(True)  # its layers register their packed weights with `Counting`
    assert any(isinstance(m, PackedLinear) for m in eng.model.modules())
    assert eng.generate(ps, params) == expected
    assert looked_up, "the compiled graphs did not call the packed weights"
