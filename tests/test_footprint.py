"""The footprint formula (parallax/models/footprint.py) against the bytes of really
loaded models, in every dtype and weight format, and the coordinator's plausibility
check of what a node reports."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from node.engine.kv_cache import allocate_kv
from node.model.quant import module_bytes
from node.weights import load_shard_model
from parallax.errors import InvalidArgument
from parallax.models.footprint import Footprint, footprint, held_format, implausible
from parallax.models.registry import resolve_model
from parallax.types import LayerRange
from tests.support.tiny_models import make_tiny_model

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
FORMATS = [
    ("float32", "auto"),
    ("bfloat16", "auto"),
    ("float32", "fp32"),
    ("bfloat16", "bf16"),
    ("float32", "q8"),
    ("bfloat16", "q8"),
    ("float32", "q4"),
    ("bfloat16", "q4"),
]
# (family, overrides): qwen2 has q/k/v biases, qwen3 q/k norms; "odd" has shapes the
# int4 kernel cannot take (72 MLP rows and inputs), so those projections fall to q8.
MODELS = [
    ("llama", {}),
    ("qwen2", {}),
    ("qwen3", {}),
    ("llama", {"intermediate_size": 72, "num_key_value_heads": 1}),
]


@pytest.fixture(scope="module", params=range(len(MODELS)), ids=["llama", "qwen2", "qwen3", "odd"])
def tiny(request, tmp_path_factory: pytest.TempPathFactory):
    family, overrides = MODELS[request.param]
    path = make_tiny_model(tmp_path_factory.mktemp(family) / "m", family, num_layers=3, **overrides)
    return resolve_model(str(Path(path)))


@pytest.mark.parametrize(("dtype", "weights"), FORMATS)
def test_formula_equals_the_bytes_a_loaded_shard_holds(tiny, dtype: str, weights: str) -> None:
    spec = tiny.spec
    want = footprint(spec, dtype, weights)

    def load(r: LayerRange):
        return load_shard_model(tiny, r, DTYPES[dtype], progress=False, weights=weights)

    first, last = load(LayerRange(0, 1)), load(LayerRange(spec.num_layers - 1, spec.num_layers))
    assert module_bytes(first.layers[0]) == want.weight_bytes
    assert module_bytes(last.layers[0]) == want.weight_bytes
    assert module_bytes(first.embed_tokens) == want.embedding_bytes
    norm = last.norm.numel() * last.norm.element_size()
    assert module_bytes(last.lm_head) + norm == want.head_bytes
    # The KV cache in the dtype the engine gives it (node/engine/engine.make_runner).
    kv_dtype = next(first.parameters()).dtype
    (k, v), *_ = allocate_kv(spec, 1, 1, 1, kv_dtype, "cpu")
    assert k.numel() * k.element_size() + v.numel() * v.element_size() == want.kv_bytes_per_token
    assert want.weights == held_format(weights, dtype)


def test_quantized_formats_against_bf16_on_smollm2_shape() -> None:
    """The ratios the README table states (per parameter of SmolLM2-135M's layers)."""
    from coordinator.scheduler.presets import model_preset

    spec = model_preset("smollm2-135m")
    bf16 = footprint(spec, "bfloat16").weight_bytes
    assert footprint(spec, "float32").weight_bytes == 2 * bf16
    assert 0.50 < footprint(spec, "bfloat16", "q8").weight_bytes / bf16 < 0.52
    assert 0.30 < footprint(spec, "bfloat16", "q4").weight_bytes / bf16 < 0.32


def test_bad_combinations_and_figures_are_refused() -> None:
    from coordinator.scheduler.presets import model_preset

    spec = model_preset("smollm2-135m")
    with pytest.raises(InvalidArgument, match="--dtype"):
        footprint(spec, "bfloat16", "fp32")
    with pytest.raises(InvalidArgument, match="weight format"):
        footprint(spec, "float32", "q3")
    with pytest.raises(InvalidArgument, match="dtype"):
        footprint(spec, "float64")
    with pytest.raises(InvalidArgument, match="weight_bytes"):
        replace(footprint(spec, "float32"), weight_bytes=0.0)
    with pytest.raises(InvalidArgument, match="weight_bytes"):
        replace(footprint(spec, "float32"), weight_bytes=float("nan"))


def test_implausible_reports_are_named() -> None:
    from coordinator.scheduler.presets import model_preset

    spec = model_preset("smollm2-135m")
    honest = footprint(spec, "bfloat16", "q4")
    assert implausible(spec, honest) == ""
    assert implausible(spec, replace(honest, weight_bytes=honest.weight_bytes * 1.1)) == ""
    # Claims q4 bytes while saying it runs float32 weights: a quarter of what it holds.
    liar = Footprint(**{**honest.__dict__, "weights": "fp32", "dtype": "float32"})
    why = implausible(spec, liar)
    assert "weight_bytes" in why and "fp32" in why and "--weights" in why
    assert "kv_bytes_per_token" in implausible(
        spec, replace(honest, kv_bytes_per_token=honest.kv_bytes_per_token / 4)
    )
