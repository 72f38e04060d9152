"""The coordinator's Weights service: the manifest, who to fetch from, and --share-mbps."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib

import grpc
import pytest

from coordinator.weights import add_weights_service
from node.weights.peer_model import local_model
from parallax.errors import ModelNotFound
from parallax.models.identity import ModelIdentity
from parallax.models.registry import resolve_model
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from parallax.weights.manifest import HEADER, Manifest
from tests.support.registry import HALF, hw, ready, registry

IDENTITY = ModelIdentity.of_parts({"gguf: index": "0" * 64})


async def _ask(resolved, reg, share_mbps: float):
    server = grpc.aio.server()
    add_weights_service(server, share_mbps, resolved, IDENTITY, reg)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.WeightsStub(ch)
            try:
                manifest = await stub.Manifest(pb.WeightManifestRequest(), timeout=30)
            except grpc.aio.AioRpcError as e:
                return e.code(), None
            req = pb.WeightFetchRequest(model_digest=IDENTITY.digest, region=HEADER, count=1)
            try:
                chunks = [c async for c in stub.Fetch(req, timeout=10)]
            except grpc.aio.AioRpcError as e:
                chunks = e.code()
            return manifest, chunks
    finally:
        await server.stop(None)


def test_manifest_lists_holders_serving_first_and_the_coordinator_when_it_shares(smollm2_path):
    resolved = resolve_model(str(smollm2_path))
    reg = registry()
    loading, _ = reg.join("a", "10.0.0.1:1", hw(HALF), 0.0)
    serving, _ = reg.join("b", "10.0.0.2:2", hw(HALF), 0.0)
    ready(reg, serving, 0.1)
    manifest, chunks = asyncio.run(_ask(resolved, reg, 1000))
    assert list(manifest.sources) == ["10.0.0.2:2", "10.0.0.1:1", ""]
    assert manifest.model_digest == IDENTITY.digest
    m = Manifest.from_pb(manifest)
    assert m.file_bytes == smollm2_path.stat().st_size
    header = smollm2_path.read_bytes()[: m.chunk_bytes]
    assert [c.data for c in chunks] == [header]
    assert m.regions[HEADER].chunk_sha256[0] == hashlib.sha256(header).digest()
    # --share-mbps 0: the manifest still comes, but no chunk and no "" source.
    manifest, chunks = asyncio.run(_ask(resolved, reg, 0))
    assert list(manifest.sources) == ["10.0.0.2:2", "10.0.0.1:1"]
    assert chunks == grpc.StatusCode.UNAVAILABLE


def test_a_hugging_face_model_has_no_manifest(smollm2_path):
    hf = dataclasses.replace(resolve_model(str(smollm2_path)), format="hf")
    code, _ = asyncio.run(_ask(hf, registry(), 1000))
    assert code == grpc.StatusCode.FAILED_PRECONDITION


def test_fetch_weights_decides_between_the_local_file_and_peers(smollm2_path):
    here = asyncio.run(local_model("auto", str(smollm2_path)))
    assert here is not None and here.path == smollm2_path.resolve()
    assert asyncio.run(local_model("always", str(smollm2_path))) is None
    assert asyncio.run(local_model("auto", "/nowhere/model.gguf")) is None
    with pytest.raises(ModelNotFound):
        asyncio.run(local_model("never", "/nowhere/model.gguf"))
