"""The `Weights` gRPC service: a node or the coordinator serves the chunks it holds.

A source serves bytes only; the fetcher checks each chunk against the coordinator's
manifest, so nothing here needs to be trusted, and no identity is asked: weights are
the public bytes of a public model. Requests are bounded instead: at most
`MAX_CHUNKS_PER_FETCH` chunks per call, `MAX_STREAMS` calls at once, and every byte
sent within the `--share-mbps` cap, shared by all calls. Bad input is INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Protocol

import grpc

from parallax.errors import ParallaxError
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from parallax.weights.manifest import CHUNK_BYTES, file_regions

log = logging.getLogger(__name__)

MAX_CHUNKS_PER_FETCH = 16
MAX_STREAMS = 8
MAX_REGION_NAME = 256


class ChunkStore(Protocol):
    def chunk_count(self, region: str) -> int | None:
        """Chunks of `region`, or None when the model has no such region."""

    def read(self, region: str, index: int) -> bytes | None:
        """Chunk `index` of `region`, or None when not held here."""


class FileStore:
    """Every chunk of a whole model file (a node started with --model, the coordinator)."""

    def __init__(self, path: Path, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.path, self.chunk_bytes = path, chunk_bytes
        self.regions = file_regions(path)

    def chunk_count(self, region: str) -> int | None:
        span = self.regions.get(region)
        return None if span is None else -(-span[1] // self.chunk_bytes)

    def read(self, region: str, index: int) -> bytes | None:
        offset, nbytes = self.regions[region]
        start = index * self.chunk_bytes
        with self.path.open("rb") as f:
            return os.pread(f.fileno(), min(self.chunk_bytes, nbytes - start), offset + start)


class CacheStore:
    """The chunks a node's weight cache holds (parallax/weights/cache.py)."""

    def __init__(self, cache) -> None:  # WeightCache
        self.cache = cache

    def chunk_count(self, region: str) -> int | None:
        r = self.cache.manifest.regions.get(region)
        return None if r is None else len(r.chunk_sha256)

    def read(self, region: str, index: int) -> bytes | None:
        return self.cache.read(region, index)


class Bandwidth:
    """Paces bytes to `mbps` megabits per second over every stream together."""

    def __init__(self, mbps: float) -> None:
        self.bytes_per_s = mbps * 1e6 / 8
        self._free_at = 0.0

    async def take(self, nbytes: int) -> None:
        now = time.monotonic()
        start = max(now, self._free_at)
        self._free_at = start + nbytes / self.bytes_per_s
        if start > now:
            await asyncio.sleep(start - now)


class WeightsService(pb_grpc.WeightsServicer):
    """`share_mbps` 0 serves no chunks. `manifest` (the coordinator only) answers
    Manifest with the manifest and the current sources."""

    def __init__(
        self,
        share_mbps: float,
        manifest: Callable[[], Awaitable[pb.WeightManifest]] | None = None,
    ) -> None:
        self.share_mbps = share_mbps
        self.bandwidth = Bandwidth(share_mbps) if share_mbps > 0 else None
        self._manifest = manifest
        self.store: ChunkStore | None = None  # set once this process holds the model
        self.model_digest = ""
        self.streams = 0
        self.bytes_served = 0

    def hold(self, store: ChunkStore, model_digest: str) -> None:
        self.store, self.model_digest = store, model_digest

    async def Manifest(self, request, context) -> pb.WeightManifest:
        if self._manifest is None:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED, "only the coordinator hands out the manifest"
            )
        try:
            return await self._manifest()
        except ParallaxError as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))

    def _check(self, request: pb.WeightFetchRequest) -> tuple[grpc.StatusCode, str] | None:
        if self.bandwidth is None or self.store is None:
            return grpc.StatusCode.UNAVAILABLE, "this process does not share weights"
        if request.model_digest != self.model_digest:
            return grpc.StatusCode.FAILED_PRECONDITION, "this process serves another model"
        if not 0 < request.count <= MAX_CHUNKS_PER_FETCH:
            return (
                grpc.StatusCode.INVALID_ARGUMENT,
                f"count must be 1..{MAX_CHUNKS_PER_FETCH}; got {request.count}",
            )
        if len(request.region) > MAX_REGION_NAME:
            return grpc.StatusCode.INVALID_ARGUMENT, "region name too long"
        chunks = self.store.chunk_count(request.region)
        if chunks is None:
            return grpc.StatusCode.INVALID_ARGUMENT, f"no region {request.region!r} in the model"
        if request.first_chunk + request.count > chunks:
            return (
                grpc.StatusCode.INVALID_ARGUMENT,
                f"region {request.region!r} has {chunks} chunks; asked up to "
                f"{request.first_chunk + request.count}",
            )
        if self.streams >= MAX_STREAMS:
            return grpc.StatusCode.RESOURCE_EXHAUSTED, "too many weight fetches at once"
        return None

    async def Fetch(self, request, context) -> AsyncIterator[pb.WeightChunk]:
        refused = self._check(request)
        if refused is not None:
            await context.abort(*refused)
        self.streams += 1
        try:
            for index in range(request.first_chunk, request.first_chunk + request.count):
                data = await asyncio.to_thread(self.store.read, request.region, index)
                if data is None:
                    await context.abort(
                        grpc.StatusCode.NOT_FOUND,
                        f"chunk {index} of {request.region!r} is not held here",
                    )
                await self.bandwidth.take(len(data))
                self.bytes_served += len(data)
                yield pb.WeightChunk(index=index, data=data)
        finally:
            self.streams -= 1
