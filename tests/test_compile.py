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
    assert eng.generate(ps, params) == expected
    again = eng.generate(ps[:2], params[:2])
    assert again == expected[:2]
    # Batch-1 steps run compiled (the batch shrinks to 1 at the end): one graph per group
    # size for every context length (dynamic from the start), nothing recompiles per step
    # or per layer.
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
