"""A sharded chain of quantized nodes (--weights q8/q4) gives the local engine's text.

Each NodeServer quantizes only its own layers at load; the chain's greedy tokens
equal a local engine holding the whole model in the same format, token for token.
"""

from __future__ import annotations

import asyncio

import pytest
import torch

from node.engine.engine import LocalEngine
from node.model.quant import QuantLinear
from node.weights import load_shard_model
from parallax.config.generate import EngineConfig
from parallax.models.registry import resolve_model
from parallax.sampling import SamplingParams
from parallax.types import LayerRange
from tests.support.node import BIG_KV, prompts, run_chain, tokens_of


def local_engine(path, **cfg) -> LocalEngine:
    r, ecfg = resolve_model(str(path)), EngineConfig(**cfg)
    layers = LayerRange(0, r.spec.num_layers)
    model = load_shard_model(r, layers, torch.float32, progress=False, weights=ecfg.weights)
    return LocalEngine(model, ecfg, r.spec.eos_token_ids)


@pytest.mark.parametrize("weights", ["q8", "q4"])
def test_a_quantized_chain_equals_the_quantized_local_engine(tiny_models, weights):
    path = tiny_models["llama"]
    ps = prompts(4, seed=11)
    params = SamplingParams(max_tokens=12, ignore_eos=True)
    cfg = {**BIG_KV, "weights": weights}
    local = local_engine(path, **cfg)
    assert isinstance(local.model.layers[0].mlp.down_proj, QuantLinear)
    expected = local.generate(ps, params)
    collector, servers = asyncio.run(run_chain(path, [1, 3], [cfg, cfg, cfg], ps, params))
    for s in servers:
        assert all(layer.self_attn.qkv.kind == weights for layer in s.pipeline.runner.model.layers)
    assert [tokens_of(collector, f"r{i}") for i in range(len(ps))] == expected
