"""Hugging Face repo ids resolve from the hub's cache; HF_HUB_OFFLINE keeps off the network.

No network reaches the hub here, so the cache is laid out as `huggingface_hub` writes
it (models--OWNER--NAME/snapshots/COMMIT, refs/main) and real `parallax generate`
processes read it with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from parallax.models.hub import looks_like_repo_id

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


def test_a_repo_id_loads_from_the_offline_hub_cache(tiny_models, tmp_path):
    hub = tmp_path / "hub"
    repo = hub / "models--parallax-test--tiny"
    shutil.copytree(tiny_models["llama"], repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    env = {"HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}
    from_hub = _generate("parallax-test/tiny", env)
    assert from_hub.returncode == 0, from_hub.stderr[-2000:]
    from_path = _generate(str(tiny_models["llama"]), {})
    assert from_hub.stdout == from_path.stdout and from_hub.stdout.strip()
    missing = _generate("parallax-test/absent", env)
    assert missing.returncode != 0 and "HF_HUB_OFFLINE" in missing.stderr
