"""Weights that travel peer to peer: manifest, cache, resume, lying sources, bad input.

Real gRPC servers on 127.0.0.1 serve the real SmolLM2 GGUF file's chunks; the fetcher
writes them into a real cache folder, and the shard loads from it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
import torch

from node.weights import load_shard_model
from node.weights.fetch import Fetcher, WeightsUnavailable, needed_regions
from parallax.errors import ModelFormatError
from parallax.models.gguf_meta import spec_from_gguf
from parallax.models.registry import ResolvedModel, resolve_model
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from parallax.types import LayerRange
from parallax.weights.cache import JOURNAL, WeightCache
from parallax.weights.manifest import HEADER, Manifest, build_manifest
from parallax.weights.serve import Bandwidth, CacheStore, FileStore, WeightsService

DIGEST = "d" * 64


@pytest.fixture(scope="module")
def manifest(smollm2_path) -> Manifest:
    return build_manifest(smollm2_path, DIGEST)


class _Liar(FileStore):
    """Serves every chunk with one byte flipped."""

    def read(self, region, index):
        data = bytearray(super().read(region, index))
        data[len(data) // 2] ^= 0xFF
        return bytes(data)


async def _serve(
    store, share_mbps: float = 10_000.0
) -> tuple[grpc.aio.Server, str, WeightsService]:
    service = WeightsService(share_mbps)
    if store is not None:
        service.hold(store, DIGEST)
    server = grpc.aio.server()
    pb_grpc.add_WeightsServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}", service


def _sources(*addresses):
    async def sources():
        return [list(addresses)]

    return sources


def _region_bytes(cache: WeightCache, regions) -> int:
    return sum(cache.manifest.regions[r].nbytes for r in regions)


def test_manifest_covers_the_file_and_rejects_inconsistent_wire_copies(manifest, smollm2_path):
    assert manifest.regions[HEADER].offset == 0
    assert sum(r.nbytes for r in manifest.regions.values()) <= smollm2_path.stat().st_size
    again = Manifest.from_pb(manifest.to_pb())
    assert again == manifest
    bad = manifest.to_pb()
    bad.regions[1].offset = bad.file_bytes  # would write past the end of the file
    with pytest.raises(ModelFormatError, match="inconsistent"):
        Manifest.from_pb(bad)
    bad = manifest.to_pb()
    bad.regions[1].chunk_sha256.pop()
    with pytest.raises(ModelFormatError):
        Manifest.from_pb(bad)


def test_needed_regions_are_the_range_and_the_shared_parts(manifest, smollm2_path):
    spec = spec_from_gguf(smollm2_path)
    first = needed_regions(manifest, spec, LayerRange(0, 10))
    assert HEADER in first and "token_embd.weight" in first and "output_norm.weight" not in first
    layers = {int(n.split(".")[1]) for n in first if n.startswith("blk.")}
    assert layers == set(range(10))
    last = needed_regions(manifest, spec, LayerRange(20, 30))
    # SmolLM2 ties its head to the embedding: the last shard needs it too.
    assert "output_norm.weight" in last and "token_embd.weight" in last
    assert {int(n.split(".")[1]) for n in last if n.startswith("blk.")} == set(range(20, 30))
    assert needed_regions(manifest, spec, None) == [HEADER]


def test_a_lying_source_is_dropped_and_the_shard_loads_from_the_cache(
    manifest, smollm2_path, tmp_path
):
    spec = spec_from_gguf(smollm2_path)
    layers = LayerRange(2, 4)  # a middle shard: no embedding, no head
    regions = needed_regions(manifest, spec, layers)

    async def main():
        liar, liar_at, _ = await _serve(_Liar(smollm2_path))
        honest, honest_at, honest_service = await _serve(FileStore(smollm2_path))
        cache = WeightCache(tmp_path, manifest)
        fetcher = Fetcher(cache, _sources(liar_at, honest_at), progress=False)
        try:
            report = await fetcher.ensure(regions)
        finally:
            await fetcher.close()
            await liar.stop(None)
            await honest.stop(None)
        return cache, report, fetcher, honest_service, liar_at

    cache, report, fetcher, honest_service, liar_at = asyncio.run(main())
    assert report.rejected_chunks >= 1 and fetcher.banned == {liar_at}
    assert report.fetched_bytes == report.needed_bytes == _region_bytes(cache, regions)
    assert honest_service.bytes_served == report.needed_bytes
    # Only the range's regions are on disk: the journal names no other tensor.
    held = {name for name, _ in cache.chunks()}
    assert held == set(regions)
    assert not any(n.startswith(("blk.1.", "blk.4.", "token_embd")) for n in held)
    assert cache.path.stat().st_blocks * 512 < manifest.file_bytes // 4  # a sparse file
    cache.close()
    original = resolve_model(str(smollm2_path))
    fetched = ResolvedModel("smollm2", cache.path, "gguf", spec_from_gguf(cache.path))
    a = load_shard_model(original, layers, progress=False).state_dict()
    b = load_shard_model(fetched, layers, progress=False).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_fetches_only_what_is_not_on_disk(manifest, smollm2_path, tmp_path):
    spec = spec_from_gguf(smollm2_path)
    half = needed_regions(manifest, spec, LayerRange(1, 3))
    more = needed_regions(manifest, spec, LayerRange(2, 5))

    async def fetch(regions):
        server, at, _ = await _serve(FileStore(smollm2_path))
        cache = WeightCache(tmp_path, manifest)
        fetcher = Fetcher(cache, _sources(at), progress=False)
        try:
            return cache, await fetcher.ensure(regions)
        finally:
            await fetcher.close()
            await server.stop(None)
            cache.close()

    cache, first = asyncio.run(fetch(half))
    assert first.reused_bytes == 0
    # A process killed while appending leaves a torn line: it is skipped, not trusted.
    with (cache.dir / JOURNAL).open("a") as f:
        f.write("blk.4.ffn_up.weight\t0")
    reopened = WeightCache(tmp_path, manifest)
    regions = manifest.regions
    assert reopened.chunks() == {(r, i) for r in half for i in range(len(regions[r].chunk_sha256))}
    reopened.close()
    cache, second = asyncio.run(fetch(more))
    overlap = _region_bytes(cache, [r for r in more if r in half])
    assert second.reused_bytes == overlap > 0
    assert second.fetched_bytes == second.needed_bytes - overlap


def test_a_fetched_cache_serves_what_it_holds_and_only_that(manifest, smollm2_path, tmp_path):
    spec = spec_from_gguf(smollm2_path)
    held = needed_regions(manifest, spec, LayerRange(3, 5))
    wanted = needed_regions(manifest, spec, LayerRange(4, 6))

    async def main():
        origin, origin_at, _ = await _serve(FileStore(smollm2_path))
        first = WeightCache(tmp_path / "first", manifest)
        fetcher = Fetcher(first, _sources(origin_at), progress=False)
        await fetcher.ensure(held)
        await fetcher.close()
        await origin.stop(None)
        # The first node's cache is now the only source of blk.3-4; blk.5 is nowhere.
        peer, peer_at, peer_service = await _serve(CacheStore(first))
        second = WeightCache(tmp_path / "second", manifest)
        fetcher = Fetcher(second, _sources(peer_at), progress=False, patience_s=0.0)
        try:
            with pytest.raises(WeightsUnavailable):
                await fetcher.ensure(wanted)
        finally:
            await fetcher.close()
            await peer.stop(None)
        return first, second, peer_service

    first, second, peer_service = asyncio.run(main())
    got = {name for name, _ in second.chunks()}
    assert got == set(wanted) & set(held) and not any(n.startswith("blk.5.") for n in got)
    assert peer_service.bytes_served == _region_bytes(second, got)
    for name, index in second.chunks():
        assert second.read(name, index) == first.read(name, index)
    first.close()
    second.close()


def test_runs_spread_over_peers_and_the_fallback_tier_is_used_last(
    manifest, smollm2_path, tmp_path
):
    regions = needed_regions(manifest, spec_from_gguf(smollm2_path), LayerRange(5, 9))

    async def main():
        served = [await _serve(FileStore(smollm2_path)) for _ in range(3)]
        (a, a_at, a_svc), (b, b_at, b_svc), (c, c_at, c_svc) = served
        cache = WeightCache(tmp_path, manifest)

        async def tiers():
            return [[a_at, b_at], [c_at]]

        fetcher = Fetcher(cache, tiers, progress=False)
        try:
            report = await fetcher.ensure(regions)
        finally:
            await fetcher.close()
            cache.close()
            for server, _, _ in served:
                await server.stop(None)
        return report, a_svc.bytes_served, b_svc.bytes_served, c_svc.bytes_served

    report, a, b, c = asyncio.run(main())
    assert a > 0 and b > 0 and c == 0
    assert a + b == report.fetched_bytes == report.needed_bytes


def test_bad_fetches_are_refused_with_their_status(manifest, smollm2_path, tmp_path):
    async def main():
        server, at, _ = await _serve(FileStore(smollm2_path))
        closed, closed_at, _ = await _serve(FileStore(smollm2_path), share_mbps=0)
        codes = []
        async with grpc.aio.insecure_channel(at) as ch:
            stub = pb_grpc.WeightsStub(ch)
            for req in (
                pb.WeightFetchRequest(model_digest=DIGEST, region=HEADER, count=0),
                pb.WeightFetchRequest(model_digest=DIGEST, region=HEADER, count=17),
                pb.WeightFetchRequest(model_digest=DIGEST, region="nope", count=1),
                pb.WeightFetchRequest(model_digest=DIGEST, region=HEADER, first_chunk=9, count=1),
                pb.WeightFetchRequest(model_digest="other", region=HEADER, count=1),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    [c async for c in stub.Fetch(req, timeout=5)]
                codes.append(e.value.code())
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.Manifest(pb.WeightManifestRequest(), timeout=5)
            codes.append(e.value.code())
        async with grpc.aio.insecure_channel(closed_at) as ch:
            req = pb.WeightFetchRequest(model_digest=DIGEST, region=HEADER, count=1)
            with pytest.raises(grpc.aio.AioRpcError) as e:
                [c async for c in pb_grpc.WeightsStub(ch).Fetch(req, timeout=5)]
            codes.append(e.value.code())
        cache = WeightCache(tmp_path, manifest)
        fetcher = Fetcher(cache, _sources(closed_at), progress=False, patience_s=0.0)
        with pytest.raises(WeightsUnavailable, match="--share-mbps"):
            await fetcher.ensure([HEADER])
        await fetcher.close()
        cache.close()
        await server.stop(None)
        await closed.stop(None)
        return codes

    c = grpc.StatusCode
    assert asyncio.run(main()) == [
        *[c.INVALID_ARGUMENT] * 4,
        c.FAILED_PRECONDITION,
        c.UNIMPLEMENTED,
        c.UNAVAILABLE,
    ]


def test_bandwidth_paces_all_streams_together():
    async def main():
        bw = Bandwidth(80)  # 10 MB/s
        t = time.monotonic()
        await asyncio.gather(*(bw.take(1_000_000) for _ in range(4)))
        return time.monotonic() - t

    assert asyncio.run(main()) >= 0.29  # the first MB goes at once, three wait 0.1 s each


def test_cache_dir_that_cannot_be_written_is_a_config_error(manifest, tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(Exception, match="--cache-dir"):
        WeightCache(blocker, manifest)
