"""The performance model: how fast a node runs its layers, how much KV it can keep.

Roofline per layer: a decode step at batch b reads the layer's weights once and each
sequence's KV, and does b tokens of matmul FLOPs; it takes the longer of the two.
A node's measured per-layer latency (from its heartbeats, at the batch it ran)
scales the roofline. Sizes come from the `ModelSpec`, never from tables.

A node's decode batch is bounded by its KV room: the usable memory (after the
reserve) less its weights, over one sequence's KV at the workload's mean context,
capped by the engine's --max-running. More layers on a node mean less room, fewer
sequences at once: the solvers weigh weights against KV through this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from coordinator.scheduler.memory import MemoryModel
from coordinator.scheduler.options import AllocateOptions
from coordinator.scheduler.types import LinkSpec, NodeCapacity
from parallax.models.spec import ModelSpec
from parallax.types import LayerRange


@dataclass(frozen=True)
class PerfModel:
    """Model-wide constants of the roofline, derived once per allocation."""

    mem: MemoryModel
    layer_flops: float  # one token, one layer, at the mean context
    matmul_flops: float  # of which the weight matmuls
    attn_flops: float  # and attention over the mean context
    kv_seq_bytes: float  # one sequence's KV on one layer, at the mean context
    act_bytes: float  # one token's hidden state on the wire
    head_flops: float  # the lm_head for one token
    mean_context: float
    batch_size: int
    options: AllocateOptions
    # Speeds asked for so far, by node: the solvers sort and deal by speed in their
    # inner loops (a third of the work at a thousand nodes). Fresh on every copy.
    _speeds: dict[NodeCapacity, float] = field(
        default_factory=dict, init=False, compare=False, hash=False, repr=False
    )

    @classmethod
    def of(cls, model: ModelSpec, options: AllocateOptions) -> PerfModel:
        # A running sequence holds, on average, its prompt and half its output.
        typical = options.mean_context_tokens or (
            options.mean_prompt_tokens + options.mean_output_tokens / 2
        )
        mean_ctx = max(1.0, min(float(options.context_tokens), float(typical)))
        return cls(
            mem=MemoryModel.of(model, options),
            layer_flops=float(model.flops_per_token_per_layer(int(mean_ctx))),
            matmul_flops=float(model.flops_per_token_per_layer(0)),
            attn_flops=float(
                model.flops_per_token_per_layer(int(mean_ctx)) - model.flops_per_token_per_layer(0)
            ),
            kv_seq_bytes=model.kv_bytes_per_token_per_layer(options.kv_bytes) * mean_ctx,
            act_bytes=float(model.activation_bytes_per_token(options.wire_dtype_bytes)),
            head_flops=2.0 * model.hidden_size * model.vocab_size,
            mean_context=mean_ctx,
            batch_size=options.batch_size,
            options=options,
        )

    @property
    def num_layers(self) -> int:
        return self.mem.num_layers

    def roofline_s(self, node: NodeCapacity, batch: float, tokens: float | None = None) -> float:
        """One layer, one step: `batch` sequences decoding (or `tokens` of prefill).
        The weight matmuls and attention are separate kernels, one after the other, each
        at its own roofline: at a large batch the matmuls turn compute-bound while
        attention still streams every sequence's KV (the CPU engine shows the sum)."""
        tok = batch if tokens is None else tokens
        bw, fl = max(node.mem_bandwidth, 1.0), max(node.flops, 1.0)
        own = self.mem.at(node)  # the bytes it reads in its own dtype and weight format
        mm_mem, mm_flop = (
            own.weight_bytes / bw,
            tok * self.matmul_flops / self.gemm_rate(fl, tok),
        )
        kv_seq = (
            self.kv_seq_bytes if own is self.mem else own.kv_bytes_per_token * self.mean_context
        )
        at_mem = batch * kv_seq * self.options.kv_read_factor / bw
        at_flop = tok * self.attn_flops / fl
        return (
            (mm_mem if mm_mem > mm_flop else mm_flop)
            + (at_mem if at_mem > at_flop else at_flop)
            + self.options.layer_overhead_s
        )

    def gemm_rate(self, flops: float, rows: float) -> float:
        """FLOP/s a matmul over `rows` rows reaches on a device measured at `flops`."""
        points = self.options.matmul_row_rates
        if points:
            return flops * interpolate_log(points, rows)
        half = self.options.matmul_half_rows
        return flops * rows / (rows + half) if half > 0 else flops

    def calibration(self, node: NodeCapacity) -> float:
        """Measured over modelled per-layer step time, at the batch the node measured at."""
        if node.layer_latency_ms and node.layer_latency_ms > 0:
            batch = max(1.0, node.latency_batch)
            return node.layer_latency_ms / 1e3 / self.roofline_s(node, batch)
        return 1.0

    def layer_s(self, node: NodeCapacity, batch: float, tokens: float | None = None) -> float:
        t = self.roofline_s(node, batch, tokens)
        return t * self.calibration(node) if node.layer_latency_ms else t

    def prefill_s(self, node: NodeCapacity, layers: int, tokens: int) -> float:
        return layers * self.layer_s(node, 1.0, float(tokens))

    def head_s(self, node: NodeCapacity, batch: float) -> float:
        """The lm_head of one decode step on the node holding the last layer: it reads
        the head's weights and does a vocabulary-wide matmul per sequence."""
        t_mem = self.mem.at(node).head_bytes / max(node.mem_bandwidth, 1.0)
        t_flop = batch * self.head_flops / self.gemm_rate(max(node.flops, 1.0), batch)
        return max(t_mem, t_flop) * self.calibration(node)

    def step_s(self, node: NodeCapacity, r: LayerRange, batch: float) -> float:
        """One decode step of `batch` sequences through the range (its head included)."""
        head = self.head_s(node, batch) if r.end >= self.num_layers else 0.0
        return len(r) * self.layer_s(node, batch) + head

    def range_rate(self, node: NodeCapacity, r: LayerRange, batch: float) -> float:
        """Layer-tokens/s a node holding `r` decodes at `batch`: its head slows its
        layers' share when it holds the last one."""
        if batch <= 0:
            return 0.0
        head = self.head_s(node, batch) / len(r) if r.end >= self.num_layers else 0.0
        prefill = self.token_s(node, batch) - self.layer_s(node, batch) / batch
        return 1.0 / ((self.layer_s(node, batch) + head) / batch + prefill)

    def kv_tokens(self, node: NodeCapacity, r: LayerRange) -> float:
        """KV tokens (per layer) that fit beside the range's weights, after the reserve."""
        mem = self.mem.at(node)  # its own dtype and weight format
        room = mem.kv_room(node.memory_bytes, r)
        return max(0.0, room / (len(r) * mem.kv_bytes_per_token))

    def resident_seqs(self, node: NodeCapacity, r: LayerRange) -> float:
        """Sequences at the mean context whose KV fits beside the weights, capped by the
        engine's --max-running: the most a node decodes at once."""
        fit = self.kv_tokens(node, r) / self.mean_context
        return min(fit, float(self.options.max_running_per_node))

    def token_s(self, node: NodeCapacity, batch: float) -> float:
        """Node time one output token costs on one layer: its share of a decode step at
        `batch`, plus its request's prefill spread over the request's output tokens."""
        opts = self.options
        ratio = opts.mean_prompt_tokens / opts.mean_output_tokens
        prefill = self.layer_flops / max(node.flops, 1.0) * self.calibration(node)
        return self.layer_s(node, batch) / batch + ratio * prefill

    def node_rate(self, node: NodeCapacity, layers: int, batch: float) -> float:
        """Output tokens/s a node carries through `layers` layers at `batch` per step."""
        if layers <= 0 or batch <= 0:
            return 0.0
        return 1.0 / (layers * self.token_s(node, batch))

    def speed(self, node: NodeCapacity) -> float:
        """Layer-tokens/s at full batch: a node's weight when layers are apportioned."""
        got = self._speeds.get(node)
        if got is None:
            got = self._speeds[node] = 1.0 / self.token_s(node, float(self.batch_size))
        return got

    def link(self, a: NodeCapacity, b: NodeCapacity) -> LinkSpec:
        return self.options.link(a.region, b.region)

    def hop_s(self, a: NodeCapacity, b: NodeCapacity) -> float:
        """One token's activation from a to b: half the RTT plus serialisation."""
        link = self.link(a, b)
        return link.rtt_ms / 2e3 + self.act_bytes * 8 / (link.gbps * 1e9)


def interpolate_log(points: tuple[tuple[float, float], ...], x: float) -> float:
    """y at x from (x, y) points with x ascending: linear in log(x), flat past the ends."""
    if x <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if x <= x1:
            w = math.log(x / x0) / math.log(x1 / x0)
            return y0 + w * (y1 - y0)
    return points[-1][1]
