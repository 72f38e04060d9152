"""A Hugging Face repo id on a node: only the weight files of its layers, checked
against the coordinator's identity (offline hub cache; no network reaches the hub)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from node.weights.hub_model import check_partial, shard_patterns
from parallax.models.identity import ModelIdentity, ModelMismatch, model_identity
from parallax.models.registry import resolve_model
from parallax.models.spec import ModelSpec
from parallax.types import LayerRange
from tests.support.chat import chat, local_texts
from tests.support.cluster import Cluster

COMMIT = "89abcdef0123456789abcdef0123456789abcdef"


def shard(tiny: Path, out: Path) -> Path:
    """The tiny model re-saved as one file per layer, plus the embedding's and the head's."""
    out.mkdir(parents=True)
    for f in tiny.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, out / f.name)
    tensors = load_file(tiny / "model.safetensors")
    groups: dict[str, dict] = {}
    for name, t in tensors.items():
        key = name.split(".")[2] if name.startswith("model.layers.") else name.split(".")[-2]
        groups.setdefault(key, {})[name] = t.contiguous()
    weight_map = {}
    for i, (_key, group) in enumerate(sorted(groups.items())):
        fname = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        save_file(group, out / fname, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(group, fname))
    index = {"metadata": {}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index))
    return out


@pytest.fixture()
def sharded(tiny_models, tmp_path) -> Path:
    return shard(tiny_models["llama"], tmp_path / "sharded")


def _files(index: dict, layer: int) -> set[str]:
    return {f for n, f in index["weight_map"].items() if n.startswith(f"model.layers.{layer}.")}


def test_only_the_files_of_the_range_are_asked_for(sharded):
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    spec = ModelSpec.from_hf_dir(sharded)
    wm = index["weight_map"]
    middle = set(shard_patterns(index, spec, LayerRange(1, 3)))
    assert middle == _files(index, 1) | _files(index, 2)
    first = set(shard_patterns(index, spec, LayerRange(0, 1)))
    assert first == _files(index, 0) | {wm["model.embed_tokens.weight"]}
    last = set(shard_patterns(index, spec, LayerRange(3, 4)))
    assert last == _files(index, 3) | {wm["model.norm.weight"], wm["lm_head.weight"]}
    assert shard_patterns(index, spec, None) == ()


def test_a_partial_folder_passes_only_when_what_it_holds_is_the_coordinators(sharded):
    served = model_identity(resolve_model(str(sharded)))
    parts = dict(served.parts)
    check_partial(parts, served, "o/n")
    one_file = next(k.split(":")[0] for k in parts if ".safetensors:" in k)
    partial = {k: v for k, v in parts.items() if not k.startswith(one_file + ":")}
    check_partial(partial, served, "o/n")  # another range's weight file: fine
    with pytest.raises(ModelMismatch, match="config.json"):
        check_partial({k: v for k, v in parts.items() if k != "config.json"}, served, "o/n")
    with pytest.raises(ModelMismatch, match="differ"):
        check_partial({**parts, "config.json": "0" * 64}, served, "o/n")
    assert isinstance(served, ModelIdentity)


@pytest.mark.e2e
def test_a_cluster_serves_a_repo_id_from_the_offline_hub_cache(sharded, tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    repo = hub / "models--parallax-test--sharded"
    shutil.copytree(sharded, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    want = local_texts(sharded, ["hello"], max_tokens=8)
    with Cluster("parallax-test/sharded", nodes=2, min_stages=2) as cluster:
        got = [chat(cluster.http_url, "hello", max_tokens=8)]
        # Each node's last ask: the files of the range it serves now (a node alone at
        # first holds the whole model, so asked for every file then).
        last = [[x for x in w.lines if "from the hub" in x][-1] for w in cluster.workers]
        ranges = [n["assignment"]["range"] for n in cluster.status()["nodes"]]
        decisions = [x for x in cluster.coordinator.lines if "decision" in x]
    assert got == want
    asked = [set(json.loads(line[line.index("{") :])["files"]) for line in last]
    files = set(
        json.loads((sharded / "model.safetensors.index.json").read_text())["weight_map"].values()
    )
    assert all(0 < len(a) < len(files) for a in asked) and set.union(*asked) == files, "\n".join(
        [str(ranges), *decisions]
    )
