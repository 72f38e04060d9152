"""The planner's performance model against the real CPU engine (e2e).

The node engine (node/engine) runs decode steps of a tiny random model and of SmolLM2
at several (layers, batch, context) points; the planner predicts each step's time from
the node's *measured* hardware (node/hardware.py measure_hardware) and must land within
±30%. It also predicts the KV the engine holds beside a range's weights and how many
sequences of a given context fit there: the engine, given that room, must admit within
±30% of it, and a loaded range's weights must weigh what the planner counts.

The engine profile passed to the planner is this engine's, stated once below: eager
PyTorch pays ~0.15 ms of dispatch per layer and step; decode attention gathers each
sequence's KV (a read and a write) before attending with grouped heads expanded; and
decode-sized matmuls (a few rows) run far below the large-matmul FLOP/s, by a curve
measured here on the model's own layer shapes (`matmul_row_rates`): CPU BLAS picks a
different kernel per row count and shape, and on the dev box 8 rows took about as long as 16,
which no smooth formula follows. The probe streams more weights than the box's 300 MiB
L3 holds, as a step over SmolLM2's 30 fp32 layers (425 MB) does: probed over 64 MiB,
the weights sat in L3, few-row matmuls ran ~25% faster than the engine's, and batch 8
measured 1.33-1.48x its prediction.

Robust on a loaded 2-core box: every time is this thread's CPU time (torch runs on one
thread here), which other processes' turns on the cores do not inflate; points and
probes are measured in interleaved rounds and medians taken. Wall time on the same box
at load 7 read the bandwidth probe at 5 GB/s and put the ratios at 1.05-1.69.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from coordinator.scheduler.options import AllocateOptions
from coordinator.scheduler.perf import PerfModel
from coordinator.scheduler.types import NodeCapacity
from node.engine.engine import make_runner
from node.engine.runner import Chunk, ShardRunner
from node.weights import load_shard_model
from parallax.config.generate import EngineConfig
from parallax.models.registry import resolve_model
from parallax.models.spec import ModelSpec
from parallax.types import LayerRange, NodeId
from tests.support.tiny_models import make_tiny_model

pytestmark = pytest.mark.e2e

TOLERANCE = 0.30
ROUNDS = 5
STEPS = 3
# This engine's cost beyond the roofline (see the module docstring): dispatch per layer.
EAGER_LAYER_S = 150e-6
# Row counts the matmul probe measures (decode batches).
PROBE_ROWS = (1, 2, 4, 8, 16, 32, 64)
# Bytes of weights the row probe streams through: more than this box's 300 MiB L3, as a
# step over a real range is.
STREAM_BYTES = 640 << 20
clock = time.thread_time  # this thread's CPU time: see the module docstring


def timed(fn, reps: int) -> float:
    fn()
    t = clock()
    for _ in range(reps):
        fn()
    return (clock() - t) / reps


class Probe:
    """The hardware as the planner sees it, as a node could measure it when it joins:
    peak FLOP/s (an in-cache square matmul), streaming bandwidth (a 64 MiB copy), and
    the efficiency of one layer's matmuls at each row count, on the model's own shapes
    (q/k/v, o, gate/up, down) with enough copies of them that they stream from memory
    as a step's weights do."""

    def __init__(self, spec: ModelSpec) -> None:
        self.flops: list[float] = []
        self.bandwidth: list[float] = []
        self.rows: dict[int, list[float]] = {r: [] for r in PROBE_ROWS}
        n = 512
        self.a, self.b = torch.randn(n, n), torch.randn(n, n)
        self.out = torch.empty(n, n)
        self.src = torch.ones(16 << 20)  # 64 MiB of float32
        self.dst = torch.empty_like(self.src)
        h, i = spec.hidden_size, spec.intermediate_size
        q, kv = spec.num_attention_heads * spec.head_dim, spec.num_key_value_heads * spec.head_dim
        shapes = [(h, q + 2 * kv), (q, h), (h, 2 * i), (i, h)]  # (in, out)
        self.layer_params = sum(a * b for a, b in shapes)
        copies = max(1, (STREAM_BYTES) // (4 * self.layer_params))
        self.layers = [[torch.randn(b, a) for a, b in shapes] for _ in range(copies)]
        self.at = 0

    def one_layer(self, x: dict[int, torch.Tensor]) -> None:
        ws = self.layers[self.at % len(self.layers)]
        self.at += 1
        for w in ws:
            F.linear(x[w.shape[1]], w)

    def measure(self) -> None:
        n = self.a.shape[0]
        self.flops.append(2 * n**3 / timed(lambda: torch.mm(self.a, self.b, out=self.out), 10))
        self.bandwidth.append(2 * self.src.numel() * 4 / timed(lambda: self.dst.copy_(self.src), 5))
        dims = {w.shape[1] for w in self.layers[0]}
        for r in PROBE_ROWS:
            x = {d: torch.randn(r, d) for d in dims}
            per_layer = timed(lambda x=x: self.one_layer(x), len(self.layers))
            self.rows[r].append(2 * r * self.layer_params / per_layer)

    def node(self) -> NodeCapacity:
        flops, bandwidth = statistics.median(self.flops), statistics.median(self.bandwidth)
        return NodeCapacity(NodeId("cpu"), 8 * 2**30, flops, bandwidth)

    def row_rates(self) -> tuple[tuple[float, float], ...]:
        peak = statistics.median(self.flops)
        return tuple(
            (float(r), min(1.0, statistics.median(self.rows[r]) / peak)) for r in PROBE_ROWS
        )


def engine_options(spec: ModelSpec, context: int, **kw) -> AllocateOptions:
    group = spec.num_attention_heads // spec.num_key_value_heads
    return AllocateOptions(
        dtype_bytes=4,
        context_tokens=max(context, 64),
        mean_context_tokens=context,
        max_running_per_node=1 << 20,
        layer_overhead_s=EAGER_LAYER_S,
        kv_read_factor=2.0 + group,
        **kw,
    )


class Point:
    """One (layers, batch, context) point: a prefix shard with `batch` sequences."""

    def __init__(self, path: Path, layers: int, batch: int, context: int, tag: str):
        resolved = resolve_model(str(path))
        self.spec = resolved.spec
        self.range = LayerRange(0, layers)
        self.batch, self.context, self.tag = batch, context, tag
        model = load_shard_model(resolved, self.range, torch.float32, progress=False)
        self.runner: ShardRunner = make_runner(model, EngineConfig(kv_cache_mb=256))
        self.ids = [f"{tag}-{i}" for i in range(batch)]
        self.at = context
        self.runner.run([Chunk(r, 0, context, False, (5,) * context) for r in self.ids])
        self.times: list[float] = []

    def measure(self) -> None:
        steps = []
        for _ in range(STEPS):
            sample = self.range.end == self.spec.num_layers
            chunks = [Chunk(r, self.at, 1, sample, (7,)) for r in self.ids]
            t = clock()
            self.runner.run(chunks)
            steps.append(clock() - t)
            self.at += 1
        self.times.append(statistics.median(steps))

    def predicted(self, node: NodeCapacity, rates: tuple[tuple[float, float], ...]) -> float:
        context = self.at - STEPS * ROUNDS // 2
        opts = engine_options(self.spec, context, matmul_row_rates=rates)
        return PerfModel.of(self.spec, opts).step_s(node, self.range, float(self.batch))


@pytest.fixture(scope="module")
def mid_model(tmp_path_factory) -> Path:
    """A tiny random llama big enough that a step is not all dispatch overhead."""
    return make_tiny_model(
        tmp_path_factory.mktemp("calib") / "mid",
        "llama",
        num_layers=8,
        hidden_size=512,
        intermediate_size=1536,
        num_attention_heads=8,
        num_key_value_heads=4,
    )


def test_step_time_within_30_percent_of_the_engine(smollm2_path: Path, mid_model: Path) -> None:
    torch.set_num_threads(1)  # one core: the other is the box's
    points = [
        Point(mid_model, 2, 1, 32, "m-2-1"),
        Point(mid_model, 8, 8, 128, "m-8-8"),
        Point(mid_model, 4, 16, 256, "m-4-16"),
        Point(smollm2_path, 4, 1, 64, "s-4-1"),
        Point(smollm2_path, 30, 1, 64, "s-30-1"),  # the whole model: head included
        Point(smollm2_path, 30, 8, 128, "s-30-8"),
        Point(smollm2_path, 10, 16, 256, "s-10-16"),
    ]
    for p in points:  # warm-up: first calls allocate and pick kernels
        p.measure()
        p.times.clear()
    probes = {p.spec: Probe(p.spec) for p in points}
    for _ in range(ROUNDS):
        for probe in probes.values():
            probe.measure()
        for p in points:
            p.measure()
    report, ratios = [], []
    for probe in probes.values():
        node, rates = probe.node(), probe.row_rates()
        report.append(f"probe: {node.flops:.3g} FLOP/s, {node.mem_bandwidth:.3g} B/s, {rates}")
    for p in points:
        node, rates = probes[p.spec].node(), probes[p.spec].row_rates()
        measured, predicted = statistics.median(p.times), p.predicted(node, rates)
        ratios.append(measured / predicted)
        report.append(
            f"{p.tag}: measured {measured * 1e3:.2f} ms, predicted {predicted * 1e3:.2f} "
            f"({measured / predicted:.2f}x)"
        )
    bad = [x for x in ratios if abs(x - 1) > TOLERANCE]
    assert not bad, "\n".join(report)


def test_kv_capacity_and_weights_within_30_percent(smollm2_path: Path) -> None:
    resolved = resolve_model(str(smollm2_path))
    spec = resolved.spec
    r = LayerRange(0, 12)
    context = 200
    memory = 1.2 * 2**30  # the node's memory as a --memory-gb would state it
    opts = engine_options(spec, context)
    perf = PerfModel.of(spec, opts)
    node = NodeCapacity(NodeId("cpu"), memory, 1e10, 1e10)
    model = load_shard_model(resolved, r, torch.float32, progress=False)
    loaded = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    predicted_weights = perf.mem.weights(r)
    assert abs(loaded / predicted_weights - 1) <= TOLERANCE, (loaded, predicted_weights)
    # Give the engine the KV room the planner leaves, then admit until it is full.
    room = perf.mem.kv_room(memory, r)
    runner = make_runner(model, EngineConfig(kv_cache_mb=room / 2**20))
    held_tokens = runner.kv.num_blocks * runner.kv.block_size
    assert abs(held_tokens / perf.kv_tokens(node, r) - 1) <= TOLERANCE
    admitted = 0
    while runner.kv.can_grow(f"s{admitted}", context):
        runner.kv.grow(f"s{admitted}", context)
        admitted += 1
    predicted = perf.resident_seqs(node, r)
    assert admitted >= 1 and abs(admitted / predicted - 1) <= TOLERANCE, (admitted, predicted)
