"""End-to-end: a volunteer with nothing joins, fetches only its layers from a peer
(the coordinator serves no weights), survives SIGKILL mid-download without fetching
again what it had, and then serves the local engine's text."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from node.weights.fetch import needed_regions
from parallax.models.gguf_meta import spec_from_gguf
from parallax.types import LayerRange
from parallax.weights.cache import JOURNAL
from parallax.weights.manifest import build_manifest
from tests.support.chat import QUESTIONS, chat, local_texts
from tests.support.cluster import Cluster
from tests.support.wait import wait_until

pytestmark = pytest.mark.e2e


def _journal(cache_dir) -> set[tuple[str, int]]:
    found = list(cache_dir.glob(f"*/{JOURNAL}"))
    if not found:
        return set()
    lines = found[0].read_text().split("\n")[:-1]
    return {(name, int(i)) for name, _, i in (line.rpartition("\t") for line in lines)}


def _logs(proc, message: str) -> list[dict]:
    out = []
    for line in proc.lines:
        start = line.find('{"')  # a progress bar may share the line
        if start >= 0 and f'"{message}"' in line:
            out.append(json.loads(line[start:]))
    return out


def test_volunteer_fetches_only_its_layers_from_a_peer_and_resumes(smollm2_path, tmp_path):
    manifest = build_manifest(smollm2_path, "")
    spec = spec_from_gguf(smollm2_path)
    size = {
        (r.name, i): r.chunk_span(i, manifest.chunk_bytes)[1]
        for r in manifest.regions.values()
        for i in range(len(r.chunk_sha256))
    }
    want = local_texts(smollm2_path, QUESTIONS[:2])
    cache = tmp_path / "cache"
    with Cluster(
        "smollm2-135m", nodes=0, min_stages=2, coordinator_args=("--share-mbps", "0")
    ) as cluster:
        # The holder: the whole file, shared slowly enough to kill the fetch midway.
        cluster.add_node("holder", "--model", str(smollm2_path), "--share-mbps", "80")
        cluster.wait_ready(1)
        volunteer = ("--fetch-weights", "always", "--cache-dir", str(cache))
        first = cluster.add_node("volunteer", *volunteer)
        # Regions come in file order: header, embedding, then the layers.
        layer_chunks = lambda: [n for n, _ in _journal(cache) if n.startswith("blk.")]  # noqa: E731
        wait_until(lambda: len(layer_chunks()) >= 3, timeout=120, what="a partial fetch")
        os.killpg(first.popen.pid, signal.SIGKILL)
        first.popen.wait()
        had = _journal(cache)
        time.sleep(5)  # declared dead: its layers go back to the holder
        second = cluster.add_node("volunteer2", *volunteer)
        cluster.wait_ready(2)
        got = [chat(cluster.http_url, q) for q in QUESTIONS[:2]]
        ranges = [
            [LayerRange(x["start"], x["end"]) for x in _logs(run, "fetching weights for layers")]
            for run in (first, second)
        ]
        fetched = sum(x["fetched_bytes"] for x in _logs(second, "weights fetched"))
        rejected = sum(x["rejected_chunks"] for x in _logs(second, "weights fetched"))
    assert got == want
    held = _journal(cache)

    def allowed(run_ranges) -> set[str]:
        return {n for r in run_ranges for n in needed_regions(manifest, spec, r)}

    # Each run fetched only the layers it was assigned (plus the header and the
    # embedding/head its range needs), and no assignment needed the whole model. A run
    # may be re-assigned midway (a node measured slower than it claimed re-plans the
    # cluster): it then fetches its new range too, and only that.
    for run_ranges, chunks in zip(ranges, (had, held - had), strict=True):
        assert run_ranges
        assert all(len(allowed([r])) < len(manifest.regions) for r in run_ranges)
        assert {name for name, _ in chunks} <= allowed(run_ranges)
    # And nothing else takes disk: the cached file is sparse (a page of slack per region).
    (cached,) = cache.glob("*/model.gguf")
    on_disk = cached.stat().st_blocks * 512
    assert on_disk <= sum(size[c] for c in held) + 8192 * len(manifest.regions)
    # Resumed: what was on disk before the kill was not fetched again.
    assert had <= held and rejected == 0 and fetched > 0
    assert fetched == sum(size[c] for c in held - had)
