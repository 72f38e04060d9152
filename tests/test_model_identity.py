"""Model identity: a node with another model under the same name is refused and told why."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import httpx
import numpy as np
import pytest

from parallax.models.identity import ModelMismatch, check_same_model, model_identity
from parallax.models.registry import resolve_model
from tests.support.cluster import Cluster
from tests.support.gguf_files import tiny_hf_state, write_tiny_llama_gguf


def _identity(path: Path):
    return model_identity(resolve_model(str(path)))


def _flip_safetensors_byte(folder: Path, tensor: str, at_end: bool = False) -> None:
    """Change one byte of one tensor's data, in place: same name, shapes and config."""
    path = folder / "model.safetensors"
    blob = bytearray(path.read_bytes())
    (size,) = struct.unpack("<Q", blob[:8])
    begin, end = json.loads(blob[8 : 8 + size])[tensor]["data_offsets"]
    at = 8 + size + (end - 1 if at_end else begin)
    blob[at] ^= 0x40
    path.write_bytes(bytes(blob))


def _differing(ours, theirs, path: Path) -> str:
    with pytest.raises(ModelMismatch) as err:
        check_same_model(ours, theirs, path, "served")
    return str(err.value)


def test_gguf_identity_names_the_part_that_differs(tmp_path):
    state = tiny_hf_state()
    a = write_tiny_llama_gguf(tmp_path / "a.gguf", state)
    b = write_tiny_llama_gguf(tmp_path / "b.gguf", state)
    assert _identity(a) == _identity(b)  # the name of the file is not part of it
    # Other weights in one tensor, same names, shapes and metadata.
    other = dict(state)
    name = next(k for k in state if k.endswith("layers.1.mlp.up_proj.weight"))
    other[name] = state[name] + np.float32(0.5)
    c = write_tiny_llama_gguf(tmp_path / "c.gguf", other)
    why = _differing(_identity(c), _identity(a), c)
    assert "gguf: tensor blk.1.ffn_up.weight" in why and str(c) in why
    assert "metadata" not in why and "--model" in why
    # Another dtype changes the index (and the bytes).
    d = write_tiny_llama_gguf(
        tmp_path / "d.gguf", {k: v.astype(np.float16) for k, v in state.items()}
    )
    assert "gguf: index" in _differing(_identity(d), _identity(a), d)


def test_hf_identity_samples_both_ends_of_every_tensor(tiny_models, tmp_path):
    ref = _identity(tiny_models["llama"])
    name = "model.layers.2.self_attn.v_proj.weight"
    for at_end in (False, True):
        copy = shutil.copytree(tiny_models["llama"], tmp_path / f"copy{at_end}")
        assert _identity(copy) == ref
        _flip_safetensors_byte(copy, name, at_end)
        why = _differing(_identity(copy), ref, copy)
        assert f"these parts differ: model.safetensors: tensor {name}. " in why
    cfg = json.loads((copy / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-3
    (copy / "config.json").write_text(json.dumps(cfg))
    assert "config.json" in _differing(_identity(copy), ref, copy)


def test_a_node_with_other_bytes_is_refused_and_the_cluster_serves_on(tiny_models, tmp_path):
    model = str(tiny_models["llama"])
    twin = shutil.copytree(tiny_models["llama"], tmp_path / "llama-twin")
    bad = shutil.copytree(tiny_models["llama"], tmp_path / "llama-copy")
    _flip_safetensors_byte(bad, "model.layers.0.mlp.down_proj.weight")

    def complete(url: str) -> str:
        body = {"model": model, "prompt": "hello world", "max_tokens": 8, "temperature": 0}
        r = httpx.post(f"{url}/v1/completions", json=body, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["text"]

    with Cluster(model, nodes=1, min_stages=2) as cluster:
        before = complete(cluster.http_url)
        node = cluster.add_node("impostor", "--model", str(bad))
        node.wait_for(
            "refused to join: .*llama-copy is not the model the coordinator serves.*"
            "these parts differ: model.safetensors: tensor model.layers.0.mlp.down_proj.weight"
            r"\. Give --model a copy",
            60,
        )
        assert node.popen.wait(30) == 2
        assert "impostor" not in [n["name"] for n in cluster.status()["nodes"]]
        # The same bytes under another path are the same model: that node joins.
        cluster.add_node("twin", "--model", str(twin))
        status = cluster.wait_ready(2)
        assert sorted(n["name"] for n in status["nodes"]) == ["node0", "twin"]
        assert complete(cluster.http_url) == before
