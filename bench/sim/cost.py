"""The simulator's own cost model: what a step takes and what KV a request holds.

Written apart from the planner's performance model (coordinator/scheduler/perf.py,
estimate.py, memory.py), so the benchmark does not grade the planner with its own
yardstick. It follows the engine where the planner abstracts:
- a step's kernels run one after another: the weight matmuls at their roofline over
  all the step's tokens, then attention over each sequence's *actual* KV length at its
  own roofline, then the head (on the stage holding the last layer, for the sampled
  rows); the planner takes one max over a mean sequence;
- KV is admitted in blocks of `KV_BLOCK_TOKENS` for the request's whole length
  (prompt plus output) on every hop, as the node's block manager reserves it, in
  what a node's memory leaves after `RUNTIME_MARGIN` and its weights;
- a node's reported per-layer latency is what it measured on its last steps (an
  average, as a node's heartbeat carries), not a model's prediction.
Sizes are counted here from the model's shape, not taken from the planner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from coordinator.scheduler.options import AllocateOptions
from coordinator.scheduler.types import LinkSpec, NodeCapacity
from parallax.models.spec import ModelSpec
from parallax.types import LayerRange

KV_BLOCK_TOKENS = 16
# Memory a node's runtime keeps for activations, the allocator and the framework.
RUNTIME_MARGIN = 0.1
# Kernel launches and small ops (norms, rotary, residual adds) per layer and step.
LAYER_LAUNCH_S = 30e-6


@dataclass(frozen=True)
class SimCost:
    num_layers: int
    matmul_params: float  # one layer's weight matrices
    layer_bytes: float  # one layer's weights, norms included
    kv_token_bytes: float  # one token's K and V on one layer
    q_dim: int
    end_bytes: float  # the embedding (first stage) or the head (last stage)
    head_flops: float  # one sampled row through the head
    wire_bytes: float  # one token's hidden state between stages
    options: AllocateOptions  # links, the engine's --max-running

    @classmethod
    def of(cls, model: ModelSpec, options: AllocateOptions) -> SimCost:
        h, i = model.hidden_size, model.intermediate_size
        q = model.num_attention_heads * model.head_dim
        kv = model.num_key_value_heads * model.head_dim
        matmul = h * q + 2 * h * kv + q * h + 3 * h * i
        kv_bytes = options.kv_dtype_bytes or options.dtype_bytes
        return cls(
            num_layers=model.num_layers,
            matmul_params=float(matmul),
            layer_bytes=float((matmul + 2 * h) * options.dtype_bytes),
            kv_token_bytes=float(2 * kv * kv_bytes),
            q_dim=q,
            end_bytes=float(model.vocab_size * h * options.dtype_bytes),
            head_flops=2.0 * h * model.vocab_size,
            wire_bytes=float(h * options.wire_dtype_bytes),
            options=options,
        )

    @property
    def max_running(self) -> int:
        return self.options.max_running_per_node

    def kv_blocks(self, node: NodeCapacity, r: LayerRange) -> int:
        """KV blocks (of every layer of `r`) the node's memory holds beside the weights."""
        weights = len(r) * self.layer_bytes
        weights += self.end_bytes * ((r.start == 0) + (r.end >= self.num_layers))
        room = node.memory_bytes * (1.0 - RUNTIME_MARGIN) - weights
        per_block = KV_BLOCK_TOKENS * self.kv_token_bytes * len(r)
        return max(0, int(room // per_block))

    @staticmethod
    def blocks_for(tokens: int) -> int:
        return math.ceil(tokens / KV_BLOCK_TOKENS)

    def step_s(
        self,
        node: NodeCapacity,
        layers: int,
        rows: list[tuple[int, int]],
        sampled: int,
    ) -> float:
        """One engine step over `layers` layers for `rows` = (new tokens, KV length after
        them) per sequence, with `sampled` rows through the head (0 off the last stage)."""
        bw, fl = max(node.mem_bandwidth, 1.0), max(node.flops, 1.0)
        tokens = sum(n for n, _c in rows)
        matmul = max(self.layer_bytes / bw, 2.0 * self.matmul_params * tokens / fl)
        kv_read = sum(c for _n, c in rows) * self.kv_token_bytes
        attn_flops = sum(4.0 * self.q_dim * n * c for n, c in rows)
        attention = max(kv_read / bw, attn_flops / fl)
        head = max(self.end_bytes / bw, sampled * self.head_flops / fl) if sampled else 0.0
        return layers * (matmul + attention + LAYER_LAUNCH_S) + head

    def link(self, a: NodeCapacity, b: NodeCapacity) -> LinkSpec:
        return self.options.link(a.region, b.region)

    def hop_s(self, a: NodeCapacity, b: NodeCapacity) -> float:
        """A message from a to b: half the RTT plus serialisation of one hidden state."""
        link = self.link(a, b)
        return link.rtt_ms / 2e3 + self.wire_bytes * 8 / (link.gbps * 1e9)

    def layer_rate(self, node: NodeCapacity, seqs: int, context: int) -> float:
        """Layer-tokens/s a node decodes with `seqs` sequences at `context` tokens."""
        seqs = max(1, seqs)
        return seqs / self.step_s(node, 1, [(1, context)] * seqs, 0)
