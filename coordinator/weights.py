"""The coordinator's side of weights that travel peer to peer: the manifest and sources.

The manifest (parallax/weights/manifest.py) is hashed from the coordinator's model
file once, at the first ask, off the event loop; every node that joins without the
model checks each chunk it fetches against it. With `--share-mbps 0` the coordinator
serves no chunk itself (it needs only the file's header to plan and tokenize, and the
file to hash once): nodes then fetch from the nodes that hold layers.
"""

from __future__ import annotations

import asyncio

import grpc

from coordinator.registry import Registry
from parallax.errors import ParallaxError
from parallax.models.identity import ModelIdentity
from parallax.models.registry import ResolvedModel
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from parallax.weights.manifest import Manifest, build_manifest
from parallax.weights.serve import FileStore, WeightsService


class ManifestSource:
    def __init__(
        self, resolved: ResolvedModel, identity: ModelIdentity, registry: Registry, serves: bool
    ) -> None:
        self.resolved, self.identity, self.registry = resolved, identity, registry
        self.serves = serves
        self._manifest: Manifest | None = None
        self._lock = asyncio.Lock()

    async def manifest(self) -> Manifest:
        if self.resolved.format != "gguf":
            raise ParallaxError(
                f"the served model {self.resolved.name} is a Hugging Face folder; only GGUF "
                "models can be fetched from peers: give each node the model with --model"
            )
        async with self._lock:
            if self._manifest is None:
                self._manifest = await asyncio.to_thread(
                    build_manifest, self.resolved.path, self.identity.digest
                )
        return self._manifest

    def sources(self) -> tuple[str, ...]:
        """Nodes that hold layers, those serving first; "" (this coordinator) last."""
        live = [r for r in self.registry.nodes if r.alive and not r.quarantined]
        held = [r for r in live if r.assignment.range is not None]
        held.sort(key=lambda r: not r.serving)
        return (*(r.address for r in held), *([""] if self.serves else ()))

    async def __call__(self) -> pb.WeightManifest:
        return (await self.manifest()).to_pb(self.sources())


def add_weights_service(
    server: grpc.aio.Server,
    share_mbps: float,
    resolved: ResolvedModel,
    identity: ModelIdentity,
    registry: Registry,
) -> WeightsService:
    serves = share_mbps > 0 and resolved.format == "gguf"
    service = WeightsService(share_mbps, ManifestSource(resolved, identity, registry, serves))
    if serves:
        service.hold(FileStore(resolved.path), identity.digest)
    pb_grpc.add_WeightsServicer_to_server(service, server)
    return service
