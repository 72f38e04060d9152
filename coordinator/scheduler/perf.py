"""The performance model: how fast a node runs its layers, how much KV it can keep.

Roofline per layer: a decode step at batch b reads the layer's weights once and each
sequence's KV, and does b tokens of matmul FLOPs; it takes the longer of the two.
A node's measured per-layer latency at batch 1, when known, scales the roofline.
Sizes come from the `ModelSpec`, never from tables.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.scheduler.memory import MemoryModel
from coordinator.scheduler.options import AllocateOptions
from coordinator.scheduler.types import LinkSpec, NodeCapacity
from parallax.models.spec import ModelSpec
from parallax.types import LayerRange

# Fixed cost of one layer's kernels per step (launches, norms, sync), seconds.
LAYER_OVERHEAD_S = 20e-6


@dataclass(frozen=True)
class PerfModel:
    """Model-wide constants of the roofline, derived once per allocation."""

    mem: MemoryModel
    layer_flops: float  # one token, one layer, at the mean context
    kv_seq_bytes: float  # one sequence's KV on one layer, at the mean context
    act_bytes: float  # one token's hidden state on the wire
    mean_context: float
    batch_size: int
    options: AllocateOptions

    @classmethod
    def of(cls, model: ModelSpec, options: AllocateOptions) -> PerfModel:
        # A running sequence holds, on average, its prompt and half its output.
        mean_ctx = max(
            1.0,
            min(
                float(options.context_tokens),
                options.mean_prompt_tokens + options.mean_output_tokens / 2,
            ),
        )
        return cls(
            mem=MemoryModel.of(model, options),
            layer_flops=float(model.flops_per_token_per_layer(int(mean_ctx))),
            kv_seq_bytes=model.kv_bytes_per_token_per_layer(options.kv_bytes) * mean_ctx,
            act_bytes=float(model.activation_bytes_per_token(options.wire_dtype_bytes)),
            mean_context=mean_ctx,
            batch_size=options.batch_size,
            options=options,
        )

    @property
    def num_layers(self) -> int:
        return self.mem.num_layers

    def roofline_s(self, node: NodeCapacity, batch: float, tokens: float | None = None) -> float:
        """One layer, one step: `batch` sequences decoding (or `tokens` of prefill)."""
        tok = batch if tokens is None else tokens
        read = self.mem.weight_bytes + batch * self.kv_seq_bytes
        t_mem = read / max(node.mem_bandwidth, 1.0)
        t_flop = tok * self.layer_flops / max(node.flops, 1.0)
        return max(t_mem, t_flop) + LAYER_OVERHEAD_S

    def calibration(self, node: NodeCapacity) -> float:
        if node.layer_latency_ms and node.layer_latency_ms > 0:
            return node.layer_latency_ms / 1e3 / self.roofline_s(node, 1.0)
        return 1.0

    def layer_s(self, node: NodeCapacity, batch: float, tokens: float | None = None) -> float:
        return self.roofline_s(node, batch, tokens) * self.calibration(node)

    def prefill_s(self, node: NodeCapacity, layers: int, tokens: int) -> float:
        return layers * self.layer_s(node, 1.0, float(tokens))

    def resident_seqs(self, node: NodeCapacity, r: LayerRange) -> float:
        """Sequences whose KV fits beside the weights: weights first, the rest is KV."""
        weights = len(r) * self.mem.weight_bytes + self.mem.extras(
            r.start == 0, r.end == self.num_layers
        )
        room = node.memory_bytes - weights
        fit = max(0.0, room / (len(r) * self.kv_seq_bytes))
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
        return 1.0 / self.token_s(node, float(self.batch_size))

    def link(self, a: NodeCapacity, b: NodeCapacity) -> LinkSpec:
        return self.options.link(a.region, b.region)

    def hop_s(self, a: NodeCapacity, b: NodeCapacity) -> float:
        """One token's activation from a to b: half the RTT plus serialisation."""
        link = self.link(a, b)
        return link.rtt_ms / 2e3 + self.act_bytes * 8 / (link.gbps * 1e9)
