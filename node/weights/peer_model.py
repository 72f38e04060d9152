"""A node's model from peers: the coordinator's manifest, the cache, and what to fetch.

A node that joins without the model (`--fetch-weights auto|always`) asks the
coordinator for its manifest, fetches the shared regions (header, so config and
tokenizer, and `rope_freqs`), then before each load the regions of its assigned
layers. The cached file is a sparse copy of the coordinator's, so it resolves and
loads like the original. What it holds it serves to others (`--share-mbps`).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import grpc

from node.weights.fetch import Fetcher, FetchReport, needed_regions
from parallax.errors import ParallaxError
from parallax.models.gguf_meta import spec_from_gguf
from parallax.models.hub import looks_like_repo_id
from parallax.models.identity import ModelIdentity, ModelMismatch
from parallax.models.registry import ResolvedModel
from parallax.rpc import deadlines
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from parallax.rpc.tls import Tls, open_channel
from parallax.types import LayerRange
from parallax.weights.cache import WeightCache, default_cache_dir
from parallax.weights.manifest import Manifest

log = logging.getLogger(__name__)

# The manifest of a large model is megabytes: allow it past gRPC's 4 MiB default.
MANIFEST_CHANNEL_OPTIONS = (("grpc.max_receive_message_length", 256 << 20),)


class PeerModel:
    def __init__(
        self,
        coordinator: str,
        own_address: str,
        cache_dir: str,
        tls: Tls | None = None,
        progress: bool = True,
    ) -> None:
        self.coordinator, self.own_address, self.tls = coordinator, own_address, tls
        self.root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.progress = progress
        self._channel = open_channel(coordinator, tls, MANIFEST_CHANNEL_OPTIONS)
        self.cache: WeightCache | None = None
        self.fetcher: Fetcher | None = None
        self.resolved: ResolvedModel | None = None
        self.reports: list[FetchReport] = []

    async def _manifest(self) -> pb.WeightManifest:
        try:
            return await pb_grpc.WeightsStub(self._channel).Manifest(
                pb.WeightManifestRequest(), timeout=deadlines.WEIGHT_MANIFEST_S
            )
        except grpc.aio.AioRpcError as e:
            raise ParallaxError(
                f"the coordinator at {self.coordinator} gave no weight manifest "
                f"({e.code().name}: {e.details()}); give this node the model with --model"
            ) from None

    async def sources(self) -> list[list[str]]:
        """Peers holding layers first, the coordinator last (when it serves weights)."""
        reply = await self._manifest()
        peers = [s for s in reply.sources if s and s != self.own_address]
        return [peers, [self.coordinator] if "" in reply.sources else []]

    async def open(self, model_name: str, model_digest: str) -> ResolvedModel:
        """Fetch the manifest and the shared regions; the model as this node reads it."""
        reply = await self._manifest()
        if model_digest and reply.model_digest != model_digest:
            raise ModelMismatch(
                f"the coordinator's weight manifest is for model {reply.model_digest[:16]}, "
                f"not the {model_digest[:16]} it announced at the join; restart the node"
            )
        manifest = Manifest.from_pb(reply)
        self.cache = await asyncio.to_thread(WeightCache, self.root, manifest)
        self.fetcher = Fetcher(self.cache, self.sources, self.tls, self.progress)
        log.info("weight cache", extra={"path": str(self.cache.path)})
        self.reports.append(await self.fetcher.ensure(needed_regions(manifest, None, None)))
        spec = await asyncio.to_thread(spec_from_gguf, self.cache.path)
        self.resolved = ResolvedModel(model_name, self.cache.path, "gguf", spec)
        return self.resolved

    async def ensure(self, layers: LayerRange | None) -> FetchReport:
        """Fetch what serving `layers` needs and the cache lacks."""
        if self.cache is None or self.fetcher is None or self.resolved is None:
            raise ParallaxError("PeerModel.open must be called before ensure")
        regions = needed_regions(self.cache.manifest, self.resolved.spec, layers)
        span = {"start": layers.start, "end": layers.end} if layers else {"standby": True}
        log.info("fetching weights for layers", extra=span)
        report = await self.fetcher.ensure(regions)
        self.reports.append(report)
        return report

    async def close(self) -> None:
        if self.fetcher is not None:
            await self.fetcher.close()
        if self.cache is not None:
            self.cache.close()
        await self._channel.close()


async def local_model(fetch_weights: str, name: str) -> ResolvedModel | None:
    """The coordinator's model found on this machine, or None to fetch it from peers
    (`--fetch-weights`: auto fetches when the name does not resolve here)."""
    from parallax.errors import ModelFormatError, ModelNotFound
    from parallax.models.registry import resolve_model

    if fetch_weights == "always":
        return None
    if fetch_weights == "auto" and looks_like_repo_id(name) and not Path(name).exists():
        return None  # the hub, but only the files of this node's layers (HubModel)
    try:
        return await asyncio.to_thread(resolve_model, name)
    except (ModelNotFound, ModelFormatError) as e:
        if fetch_weights == "never":
            raise
        log.info("model not found here; fetching its layers from peers", extra={"why": str(e)})
        return None


def file_store(resolved: ResolvedModel):
    """A whole local GGUF file as a chunk store, or None (other formats are not shared)."""
    from parallax.weights.serve import FileStore

    return FileStore(resolved.path) if resolved.format == "gguf" else None


async def open_remote(
    name: str,
    fetch_weights: str,
    coordinator: str,
    own_address: str,
    cache_dir: str,
    served: ModelIdentity | None,
    weights,  # parallax.weights.serve.WeightsService: shares what the node fetched
    tls: Tls | None = None,
):
    """The coordinator's model from elsewhere: a repo id from the Hugging Face hub
    (`auto`), anything else from peers, chunk by chunk. Returns the PeerModel or
    HubModel; its `resolved` is the model and its `ensure(layers)` fetches a range."""
    from node.weights.hub_model import HubModel
    from parallax.weights.serve import CacheStore

    if fetch_weights == "auto" and looks_like_repo_id(name):
        hub = HubModel(name, served)
        await hub.open()
        return hub
    peers = PeerModel(coordinator, own_address, cache_dir, tls)
    await peers.open(name, served.digest if served else "")
    weights.hold(CacheStore(peers.cache), peers.cache.manifest.model_digest)
    return peers
