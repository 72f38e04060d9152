"""Hugging Face repo ids resolve from the hub's cache; HF_HUB_OFFLINE keeps off the network.

No network reaches the hub here, so the cache is laid out as `huggingface_hub` writes
it (models--OWNER--NAME/snapshots/COMMIT, refs/main) and read with HF_HUB_OFFLINE=1:
resolved in this process, and (e2e) by real `parallax generate` processes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from parallax.errors import ModelNotFound
from parallax.models.hub import looks_like_repo_id
from parallax.models.registry import resolve_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _generate(model: str, env: dict) -> subprocess.CompletedProcess:
    args = ["generate", "--model", model, "--prompt", "hi", "--max-tokens", "6"]
    return subprocess.run(
        [sys.executable, "-m", "parallax", *args],
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_repo_ids_are_told_from_paths_and_names():
    assert looks_like_repo_id("Qwen/Qwen2.5-0.5B-Instruct")
    assert looks_like_repo_id("HuggingFaceTB/SmolLM2-135M-Instruct")
    for name in ("smollm2-135m", "./a/b", "/a/b", "a/b/c", "a/model.gguf", "~/x"):
        assert not looks_like_repo_id(name), name


def _offline_cache(tiny: Path, hub: Path, repo: str) -> Path:
    """`tiny` laid out as huggingface_hub caches repo `repo`; its snapshot folder."""
    top = hub / ("models--" + repo.replace("/", "--"))
    snapshot = top / "snapshots" / COMMIT
    shutil.copytree(tiny, snapshot)
    (top / "refs").mkdir()
    (top / "refs" / "main").write_text(COMMIT)
    return snapshot


def test_a_repo_id_resolves_from_the_offline_hub_cache(tiny_models, tmp_path, monkeypatch):
    snapshot = _offline_cache(tiny_models["llama"], tmp_path / "hub", "parallax-test/tiny")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolved = resolve_model("parallax-test/tiny")
    assert resolved.path == snapshot.resolve() and resolved.format == "hf"
    assert resolved.spec == resolve_model(str(tiny_models["llama"])).spec
    with pytest.raises(ModelNotFound, match="HF_HUB_OFFLINE"):
        resolve_model("parallax-test/absent")


@pytest.mark.e2e
def test_generate_runs_a_repo_id_from_the_offline_hub_cache(tiny_models, tmp_path):
    _offline_cache(tiny_models["llama"], tmp_path / "hub", "parallax-test/tiny")
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    from_hub = _generate("parallax-test/tiny", env)
    assert from_hub.returncode == 0, from_hub.stderr[-2000:]
    from_path = _generate(str(tiny_models["llama"]), {})
    assert from_hub.stdout == from_path.stdout and from_hub.stdout.strip()
