"""Fetch a shard's weight chunks from peers (or the coordinator) into the local cache.

Only the regions a layer range needs are fetched (`needed_regions`): the GGUF header
(config, tokenizer, tensor index), `rope_freqs` when present, the range's own layers,
and the embedding and head when it holds the first or last layer. Every chunk is
checked against the coordinator's manifest before it is written: a source that sends
a chunk whose hash differs is dropped for the rest of the fetch, and the chunk is asked
of the next source. Progress is a byte bar on stderr and structured log lines.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from tqdm import tqdm

from node.weights import shard_tensor_filter
from node.weights.gguf_loader import hf_name
from parallax.errors import ParallaxError
from parallax.models.spec import ModelSpec
from parallax.rpc import deadlines
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from parallax.rpc.tls import Tls, open_channel
from parallax.types import LayerRange
from parallax.weights.cache import WeightCache
from parallax.weights.manifest import HEADER, Manifest
from parallax.weights.serve import MAX_CHUNKS_PER_FETCH

log = logging.getLogger(__name__)

SHARED = (HEADER, "rope_freqs.weight")  # every shard reads these (the spec needs both)


class WeightsUnavailable(ParallaxError):
    """No source serves the chunks this node needs."""


def needed_regions(manifest: Manifest, spec: ModelSpec, layers: LayerRange | None) -> list[str]:
    """The regions a node serving `layers` reads (None: only the shared ones)."""
    shared = [n for n in SHARED if n in manifest.regions]
    if layers is None:
        return shared
    want = shard_tensor_filter(spec, layers)
    tied_head = "output.weight" not in manifest.regions and layers.end == spec.num_layers
    out = []
    for name in manifest.regions:
        hf = hf_name(name)
        if hf is not None and (want(hf) or (tied_head and hf == "model.embed_tokens.weight")):
            out.append(name)
    return shared + out


@dataclass(frozen=True)
class FetchReport:
    needed_bytes: int
    reused_bytes: int  # already on disk and verified: not fetched again
    fetched_bytes: int
    rejected_chunks: int  # failed their hash; asked again elsewhere


# Tiers of source addresses, best first: peers, then the coordinator.
Sources = Callable[[], Awaitable[list[list[str]]]]
PARALLEL = 4  # runs fetched at once, each from its own source


class Fetcher:
    """`sources()` gives the addresses to try, in tiers, best first; it is asked again
    when every source has failed, until `patience_s` has passed (peers may still be
    loading)."""

    def __init__(
        self,
        cache: WeightCache,
        sources: Sources,
        tls: Tls | None = None,
        progress: bool = True,
        patience_s: float = 120.0,
    ) -> None:
        self.cache, self.sources, self.tls = cache, sources, tls
        self.progress, self.patience_s = progress, patience_s
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.banned: set[str] = set()  # sent a chunk that failed its hash
        self.fetched = self.rejected = 0

    def _stub(self, address: str) -> pb_grpc.WeightsStub:
        if address not in self._channels:
            self._channels[address] = open_channel(address, self.tls)
        return pb_grpc.WeightsStub(self._channels[address])

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()

    def _missing(self, regions: list[str]) -> list[tuple[str, list[int]]]:
        """Runs of missing chunks, region by region, each at most one Fetch long."""
        runs = []
        for name in regions:
            n = len(self.cache.manifest.regions[name].chunk_sha256)
            todo = [i for i in range(n) if not self.cache.has(name, i)]
            runs += [
                (name, todo[k : k + MAX_CHUNKS_PER_FETCH])
                for k in range(0, len(todo), MAX_CHUNKS_PER_FETCH)
            ]
        return runs

    async def ensure(self, regions: list[str]) -> FetchReport:
        """Fetch every chunk of `regions` the cache lacks."""
        size = self.cache.chunk_bytes
        needed = sum(size(r, i) for r in regions for i in range(self._count(r)))
        missing = sum(size(r, i) for r, run in self._missing(regions) for i in run)
        before_fetched, before_rejected = self.fetched, self.rejected
        log.info(
            "weights needed",
            extra={
                "needed_bytes": needed,
                "on_disk_bytes": needed - missing,
                "regions": len(regions),
            },
        )
        bar = tqdm(
            total=missing,
            desc="fetching weights",
            unit="B",
            unit_scale=True,
            file=sys.stderr,
            disable=not self.progress or missing == 0,
        )
        give_up = time.monotonic() + self.patience_s
        try:
            while runs := self._missing(regions):
                tiers = [[a for a in t if a not in self.banned] for t in await self.sources()]
                addresses = [a for t in tiers for a in t]
                await self._fetch_runs(runs, tiers, bar)
                if self._missing(regions) and time.monotonic() > give_up:
                    raise WeightsUnavailable(
                        f"no source served {len(self._missing(regions))} runs of weight chunks "
                        f"within {self.patience_s:g} s (tried {addresses or 'none'}): start "
                        "a node that has the model (--model) or let the coordinator share "
                        "weights (--share-mbps > 0)"
                    )
                if self._missing(regions):
                    await asyncio.sleep(1.0)
        finally:
            bar.close()
        report = FetchReport(
            needed, needed - missing, self.fetched - before_fetched, self.rejected - before_rejected
        )
        log.info("weights fetched", extra=report.__dict__)
        return report

    async def _fetch_runs(self, runs: list, tiers: list[list[str]], bar) -> None:
        """Fetch runs in parallel, one worker per source of the first tier (at most
        PARALLEL): worker k starts at that tier's k-th source, so the runs spread over
        the sources, and falls back to the others, then to the next tiers."""
        queue = list(runs)
        workers = max(1, min(PARALLEL, len(tiers[0]) if tiers else 1))

        async def worker(k: int) -> None:
            while queue:
                region, run = queue.pop(0)
                for tier in tiers:
                    order = tier[k % len(tier) :] + tier[: k % len(tier)] if tier else []
                    if await self._first_that_serves(order, region, run, bar):
                        break

        await asyncio.gather(*(worker(k) for k in range(workers)))

    async def _first_that_serves(self, order: list[str], region: str, run, bar) -> bool:
        for address in order:
            if await self._fetch_run(address, region, run, bar):
                return True
        return False

    def _count(self, region: str) -> int:
        return len(self.cache.manifest.regions[region].chunk_sha256)

    async def _fetch_run(self, address: str, region: str, run: list[int], bar) -> bool:
        """Fetch the chunks of `run` still missing from one source; True when all are here."""
        todo = [i for i in run if not self.cache.has(region, i)]
        if not todo or address in self.banned:
            return not todo
        request = pb.WeightFetchRequest(
            model_digest=self.cache.manifest.model_digest,
            region=region,
            first_chunk=todo[0],
            count=todo[-1] - todo[0] + 1,
        )
        expected = iter(range(todo[0], todo[-1] + 1))
        try:
            stream = self._stub(address).Fetch(request, timeout=deadlines.WEIGHT_FETCH_S)
            async for chunk in stream:
                if chunk.index != next(expected, None):
                    self._drop(address, region, chunk.index, "out of order")
                    return False
                if self.cache.has(region, chunk.index):
                    continue
                ok = await asyncio.to_thread(self._store, region, chunk.index, chunk.data)
                if not ok:
                    self._drop(address, region, chunk.index, "hash differs from the manifest")
                    return False
                self.fetched += len(chunk.data)
                bar.update(len(chunk.data))
        except grpc.aio.AioRpcError as e:
            log.info(
                "weight source failed; trying the next",
                extra={"source": address, "region": region, "code": e.code().name},
            )
            return False
        return all(self.cache.has(region, i) for i in run)

    def _store(self, region: str, index: int, data: bytes) -> bool:
        if not self.cache.verify(region, index, data):
            return False
        self.cache.put(region, index, data)
        return True

    def _drop(self, address: str, region: str, index: int, why: str) -> None:
        self.rejected += 1
        self.banned.add(address)
        log.warning(
            "weight chunk rejected; source dropped",
            extra={"source": address, "region": region, "chunk": index, "why": why},
        )
