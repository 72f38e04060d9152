"""Live coordinator and real `parallax join` processes: a bfloat16 node is planned in
its own bytes, and gets about twice the layers of a float32 node with the same memory."""

from __future__ import annotations

import pytest

from coordinator.scheduler.memory import MemoryModel
from coordinator.server import allocate_options
from parallax.config.coordinator import CoordinatorConfig
from parallax.models.registry import resolve_model
from tests.support.cluster import Cluster
from tests.support.tiny_models import make_tiny_model

pytestmark = pytest.mark.e2e  # two node processes and a coordinator: ~25 s on 2 cores


def test_bf16_node_gets_about_twice_the_layers_of_an_fp32_node(tmp_path):
    model = make_tiny_model(tmp_path / "deep", "llama", num_layers=12)
    # Sized from what the coordinator plans with (float32 by default, its context): each
    # node has half of what one float32 copy needs, so neither float32 node could hold
    # the model, nor could two of them; the bfloat16 one holds about twice as much.
    resolved = resolve_model(str(model))
    opts = allocate_options(CoordinatorConfig(model=str(model)), resolved)
    mem = MemoryModel.of(resolved.spec, opts)
    gib = f"{0.5 * mem.total_need() / (1 - mem.reserve_fraction) / 2**30:.6f}"
    with Cluster(str(model), nodes=0, min_stages=1) as cluster:
        cluster.add_node("fp32", "--memory-gb", gib, "--dtype", "float32")
        # With --model it reports its bytes itself; the other's the coordinator computes.
        cluster.add_node("bf16", "--memory-gb", gib, "--dtype", "bfloat16", "--model", str(model))
        st = cluster.wait_ready(2, timeout=120)
        nodes = {n["name"]: n for n in st["nodes"]}
        ranges = {name: n["assignment"]["range"] for name, n in nodes.items()}
        size = {name: r[1] - r[0] for name, r in ranges.items()}
        assert size["bf16"] >= 1.7 * size["fp32"] > 0, ranges
        covered = {*range(*ranges["fp32"]), *range(*ranges["bf16"])}
        assert covered == set(range(12)), ranges
        fmt = {name: n["hardware"]["format"] for name, n in nodes.items()}
        assert fmt["fp32"]["label"] == "fp32" and fmt["bf16"]["label"] == "bf16"
        assert fmt["bf16"]["layer_bytes"] * 2 == fmt["fp32"]["layer_bytes"]
