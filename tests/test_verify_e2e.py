"""A tampered node is caught: real processes, the real SmolLM2 weights.

The attack: a volunteer runs a modified node. It loads a copy of SmolLM2 whose layer
10 has noise added (every tensor of it, requantized as the file stores it; metadata
unchanged), and reports the real file's identity (the hashes a node sends at join and
checks its copy against): a node's report about itself proves nothing. It joins like
anyone else, passes every check a join makes, and serves.

Six nodes at --min-stages 2: two-stage pipelines whose ranges overlap (the
allocation decides the cuts), so every layer has three holders or more and a check
must find the liar's span inside pipelines.
"""

from __future__ import annotations

import sys
from pathlib import Path

import gguf
import httpx
import numpy as np
import pytest
from gguf.quants import dequantize, quantize

from parallax.procs import spawn
from tests.support.chat import chat
from tests.support.cluster import Cluster
from tests.support.gguf_files import smollm2_path
from tests.support.wait import wait_until

pytestmark = pytest.mark.e2e

# The modified node: `parallax` with the model identity it reports replaced by the
# real file's (LIAR_CLAIMS), whatever file it loads.
LIAR = """
import os, sys
import parallax.models.identity as identity
from parallax.models.registry import resolve_model
claimed = identity.model_identity(resolve_model(os.environ["LIAR_CLAIMS"]))
identity.model_identity = lambda resolved: claimed
from parallax.cli import main
sys.exit(main(sys.argv[1:]))
"""
# A tampered layer every 4: wherever the planner puts the liar, its range serves some,
# and one of them has two other holders (a single pair of layers could fall where only
# one honest node holds it, and then no majority can outvote the liar: seen under load).
BAD_LAYERS = tuple(range(2, 30, 4))
MAX_CHECKS = 20


def tampered_copy(
    src: Path, dst: Path, layers: tuple[int, ...], scale: float = 0.5, seed: int = 0
) -> Path:
    """`src` with noise (`scale` times each tensor's std) on every tensor of each of `layers`."""
    reader = gguf.GGUFReader(str(src))
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(str(dst), arch, endianess=reader.endianess)
    for f in reader.fields.values():
        if f.name == gguf.Keys.General.ARCHITECTURE or f.name.startswith("GGUF."):
            continue  # written by the writer itself
        sub = f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(f.name, f.contents(), f.types[0], sub_type=sub)
    rng = np.random.default_rng(seed)
    tensors = []
    for t in reader.tensors:
        data = t.data
        if any(t.name.startswith(f"blk.{layer}.") for layer in layers):
            w = dequantize(data, t.tensor_type)
            w = w + rng.standard_normal(w.shape).astype(np.float32) * (scale * float(np.std(w)))
            plain = t.tensor_type == gguf.GGMLQuantizationType.F32
            data = w.astype(np.float32) if plain else quantize(w, t.tensor_type)
            assert data.shape == t.data.shape and data.dtype == t.data.dtype
        writer.add_tensor_info(t.name, data.shape, data.dtype, data.nbytes, t.tensor_type)
        tensors.append(data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for data in tensors:
        writer.write_tensor_data(data)
    writer.close()
    return dst


def test_a_node_serving_tampered_weights_is_quarantined(tmp_path, monkeypatch):
    bad = tampered_copy(smollm2_path(), tmp_path / "smollm2.gguf", BAD_LAYERS)
    args = ("--verify-rate", "1", "--verify-idle-s", "1", "--verify-tokens", "6")
    with Cluster(str(smollm2_path()), nodes=0, min_stages=2, coordinator_args=args) as cluster:
        for i in range(4):
            cluster.add_node(f"honest-{i}")
        with monkeypatch.context() as m:
            m.setattr("parallax.procs.PARALLAX", [sys.executable, "-c", LIAR])
            liar = spawn(
                [
                    "join",
                    "--coordinator",
                    cluster.grpc_address,
                    "--name",
                    "liar",
                    "--model",
                    str(bad),
                    "--threads",
                    "1",
                    "--kv-cache-mb",
                    "64",
                ],
                env={"LIAR_CLAIMS": str(smollm2_path())},
            )
        cluster.workers.append(liar)
        cluster.add_node("honest-4")
        liar.wait_for(r"state ready", 150)  # else its own words say why it did not serve
        st = cluster.wait_ready(6)
        ranges = {n["name"]: n["assignment"]["range"] for n in st["nodes"]}
        liar_range = ranges["liar"]

        # A layer it lies on has at least two other holders: a majority can outvote it.
        def holders(layer: int) -> int:
            return sum(1 for n, r in ranges.items() if n != "liar" and r[0] <= layer < r[1])

        served = [x for x in BAD_LAYERS if liar_range[0] <= x < liar_range[1]]
        assert any(holders(x) >= 2 for x in served), ranges
        assert chat(cluster.http_url, "hello")  # user traffic: each request owes a check

        def caught():
            s = cluster.status()
            return s if s["verification"]["quarantined"] else None

        st = wait_until(caught, 150, "the liar to be quarantined", poll_s=0.5)
        names = {n["node_id"]: n["name"] for n in st["nodes"]}
        [q] = st["verification"]["quarantines"]
        assert names[q["node_id"]] == "liar", st["verification"]
        assert q["after_checks"] <= MAX_CHECKS, st["verification"]["checks"]
        liar_rec = next(n for n in st["nodes"] if n["name"] == "liar")
        assert "spot checks" in liar_rec["quarantined"] and not liar_rec["serving"]
        assert not any(n["quarantined"] for n in st["nodes"] if n["name"] != "liar")
        assert [q["name"] for q in st["layer_map"]["quarantined"]] == ["liar"]
        # It gets no traffic: its layers are re-covered (nodes may move and reload, as
        # after a death), then the cluster serves on the honest nodes alone.
        cluster.wait_ready(5)
        assert chat(cluster.http_url, "hello")
        assert liar_rec["node_id"] not in st["allocation"]["assignments"]
        metrics = httpx.get(f"{cluster.http_url}/metrics", timeout=5).text
        assert "parallax_verify_quarantines_total 1.0" in metrics
        assert 'parallax_verify_checks_total{outcome="disagree"}' in metrics
        assert "parallax_quarantined_nodes 1.0" in metrics
        status = spawn(["status", "--url", cluster.http_url])
        status.popen.wait(30)
        assert status.popen.returncode == 0
        status.wait_for(r"quarantined: liar .*spot checks", 5)
        wait_until(
            lambda: cluster.status()["verification"]["checks"]["agree"] >= 1,
            60,
            "a check among honest nodes",
        )
        final = cluster.status()
        assert not any(n["quarantined"] for n in final["nodes"] if n["name"] != "liar")
