"""What a Hugging Face config.json means for the engine: sliding-window attention."""

from __future__ import annotations

import pytest

from parallax.errors import ModelFormatError
from parallax.models.spec import ModelSpec
from tests.support.tiny_models import hf_config


def qwen2(**over) -> dict:
    return hf_config("qwen2", num_layers=4, **over).to_dict()


def test_qwen2_slides_only_when_asked_and_on_which_layers():
    assert ModelSpec.from_hf_config(qwen2(sliding_window=8)).sliding_window is None
    on = dict(use_sliding_window=True, sliding_window=8)
    # Sliding from layer 0 on: every layer; from the layer count on: no layer.
    assert ModelSpec.from_hf_config(qwen2(**on, max_window_layers=0)).sliding_window == 8
    assert ModelSpec.from_hf_config(qwen2(**on, max_window_layers=4)).sliding_window is None
    # Some layers only: the engine has one window for all layers, so it refuses clearly,
    # from the layer_types newer transformers write, or from max_window_layers alone.
    split = qwen2(**on, max_window_layers=2)
    with pytest.raises(ModelFormatError, match="mix attention kinds"):
        ModelSpec.from_hf_config(split)
    del split["layer_types"]
    with pytest.raises(ModelFormatError, match="max_window_layers=2 of 4"):
        ModelSpec.from_hf_config(split)
    every = qwen2(**on, max_window_layers=0)
    del every["layer_types"]
    assert ModelSpec.from_hf_config(every).sliding_window == 8


def test_mistral_window_is_on_every_layer():
    cfg = hf_config("mistral", sliding_window=6).to_dict()
    assert ModelSpec.from_hf_config(cfg).sliding_window == 6
