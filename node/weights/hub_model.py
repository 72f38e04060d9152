"""A Hugging Face repo id on a node: only the safetensors files its layers need.

The coordinator serves `owner/name` (parallax/models/hub.py). A node that does not
have it fetches the small files first (configs, tokenizer, the shard index), then
before each load only the `*.safetensors` files that hold its range's tensors
(`allow_patterns`), through the hub's cache, so another range later fetches only the
files it lacks. `HF_HUB_OFFLINE=1` reads the cache only. What it holds is checked
against the identity the coordinator announced: every part the node has must equal
the coordinator's, and only whole weight files may be missing.
"""

from __future__ import annotations

import asyncio
import json
import logging

from node.weights import shard_tensor_filter
from parallax.errors import ModelFormatError
from parallax.models.hub import SMALL_PATTERNS, hub_snapshot
from parallax.models.identity import ModelIdentity, ModelMismatch, model_identity
from parallax.models.registry import ResolvedModel
from parallax.models.spec import ModelSpec
from parallax.types import LayerRange

log = logging.getLogger(__name__)


def shard_patterns(index: dict, spec: ModelSpec, layers: LayerRange | None) -> tuple[str, ...]:
    """The weight files of a sharded checkpoint's index that hold `layers`' tensors."""
    if layers is None:
        return ()
    try:
        weight_map = index["weight_map"]
    except (KeyError, TypeError):
        raise ModelFormatError("model.safetensors.index.json has no weight_map") from None
    want = shard_tensor_filter(spec, layers)
    head = layers.end == spec.num_layers
    files = {f for name, f in weight_map.items() if want(name)}
    if head and "lm_head.weight" not in weight_map:  # tied: the head is the embedding
        files.add(weight_map["model.embed_tokens.weight"])
    return tuple(sorted(files))


def check_partial(ours: dict[str, str], served: ModelIdentity, repo_id: str) -> None:
    """Raise ModelMismatch unless every part we hold is the coordinator's, and what we
    lack is only whole weight files (not fetched: other layers)."""
    differ = sorted(k for k in ours if served.parts.get(k) != ours[k])
    lacking = {k for k in served.parts if k not in ours}
    config_lacking = sorted(k for k in lacking if ".safetensors:" not in k)
    if differ or config_lacking:
        raise ModelMismatch(
            f"{repo_id} from the Hugging Face hub is not what the coordinator serves "
            f"(sha256 {served.digest[:16]}): {', '.join((differ + config_lacking)[:4])} "
            "differ; the repo changed since the coordinator fetched it? Restart the "
            "coordinator, or give this node the coordinator's files with --model"
        )


class HubModel:
    def __init__(self, repo_id: str, served: ModelIdentity | None) -> None:
        self.repo_id, self.served = repo_id, served
        self.resolved: ResolvedModel | None = None

    async def open(self) -> ResolvedModel:
        folder = await asyncio.to_thread(hub_snapshot, self.repo_id, SMALL_PATTERNS)
        if not (folder / "config.json").is_file():
            raise ModelFormatError(
                f"Hugging Face repo {self.repo_id} has no config.json; only safetensors "
                "models with config.json can be fetched from the hub"
            )
        spec = await asyncio.to_thread(ModelSpec.from_hf_dir, folder)
        self.resolved = ResolvedModel(self.repo_id, folder, "hf", spec)
        return self.resolved

    async def ensure(self, layers: LayerRange | None) -> None:
        """Fetch the weight files `layers` needs (the only file, when not sharded)."""
        if self.resolved is None:
            raise ModelFormatError("HubModel.open must be called before ensure")
        folder, spec = self.resolved.path, self.resolved.spec
        index = folder / "model.safetensors.index.json"
        if layers is None:
            files: tuple[str, ...] = ()
        elif index.is_file():
            files = shard_patterns(json.loads(index.read_text()), spec, layers)
        else:
            files = ("*.safetensors",)
        log.info("fetching weight files from the hub", extra={"files": list(files)})
        await asyncio.to_thread(hub_snapshot, self.repo_id, SMALL_PATTERNS + files)
        if self.served is not None:
            ours = await asyncio.to_thread(model_identity, self.resolved)
            check_partial(dict(ours.parts), self.served, self.repo_id)

    async def close(self) -> None:
        return None
