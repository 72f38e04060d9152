"""Shared fixtures: tiny random checkpoints, the built-in SmolLM2 model, a live cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import gguf_files
from tests.support.cluster import Cluster
from tests.support.gateway import RunningGateway, load_tokenizer, running_gateway
from tests.support.tiny_models import make_tiny_model


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {f: make_tiny_model(root / f, f) for f in ("llama", "qwen2", "qwen3", "mistral")}


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The packaged SmolLM2 GGUF file (tests.support.gguf_files.smollm2_path)."""
    return gguf_files.smollm2_path()


@pytest.fixture(scope="session")
def tokenizer(smollm2_path):
    """The built-in model's tokenizer (the gateway tests' real tokenizer)."""
    return load_tokenizer(smollm2_path)


@pytest.fixture
def gateway(tokenizer) -> Iterator[RunningGateway]:
    """The gateway app over a scripted backend, served by uvicorn on an ephemeral port."""
    with running_gateway(tokenizer) as gw:
        yield gw


@pytest.fixture(scope="module")
def cluster(tiny_models) -> Iterator[Cluster]:
    """A live 3-node cluster (real `parallax run` and `join` processes) serving the tiny
    llama, one per test module; a module that needs another cluster defines its own."""
    with Cluster(str(tiny_models["llama"]), nodes=3, min_stages=3) as c:
        yield c
