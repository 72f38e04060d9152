"""Plain-data types of the scheduler, and the constants both phases share. No I/O; no torch.

Phase 1: `allocate(nodes, model, options) -> Allocation`
Phase 2: `route(request, state) -> Route`
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from parallax.models.footprint import Footprint
from parallax.types import LayerRange, NodeId


@dataclass(frozen=True)
class NodeCapacity:
    """What a node offers. Real nodes report measurements; the simulator uses the catalog."""

    node_id: NodeId
    memory_bytes: float  # memory offered for weights plus KV
    flops: float  # dense matmul FLOP/s, measured
    mem_bandwidth: float  # bytes/s, measured
    region: str = "default"
    # Measured per-layer decode step time, ms, at a mean batch of `latency_batch`
    # sequences (heartbeats report both); calibrates the roofline.
    layer_latency_ms: float | None = None
    latency_batch: float = 1.0
    # The node's current range: the allocator prefers not to move it.
    current: LayerRange | None = None
    # Its bytes of the model in its own dtype and weight format (reported at join);
    # None: the cluster-wide default of `AllocateOptions.dtype_bytes`.
    footprint: Footprint | None = None


@dataclass(frozen=True)
class LinkSpec:
    rtt_ms: float
    gbps: float


@dataclass(frozen=True)
class Allocation:
    """Which node holds which layers. `None` means standby (holds nothing)."""

    assignments: Mapping[NodeId, LayerRange | None]
    throughput_tok_s: float = 0.0
    latency_ms_per_token: float = 0.0
    solver: str = ""
    solve_s: float = 0.0
    reason: str = ""  # human-readable: why this allocation (shown on the dashboard)

    def holders(self, layer: int) -> list[NodeId]:
        return [n for n, r in self.assignments.items() if r is not None and layer in r]

    def covers(self, num_layers: int) -> bool:
        """Whether every layer of [0, num_layers) has a holder."""
        return all(self.holders(layer) for layer in range(num_layers))


@dataclass(frozen=True)
class NodeLoad:
    """Live state of a serving node, as the registry sees it from heartbeats."""

    node_id: NodeId
    address: str  # host:port of its gRPC server
    range: LayerRange
    running: int = 0  # requests holding KV on the node
    kv_free_tokens: int = 0
    layer_latency_ms: float = 0.0
    region: str = "default"
    # KV tokens the node has in all; 0 = unknown, and then `kv_free_tokens` is not trusted.
    kv_capacity_tokens: int = 0
    # Decode capacity, layer-tokens/s (measured, or from the performance model); 0 = unknown.
    # With it, the router knows when a slow node saturates and queues.
    layer_tokens_per_s: float = 0.0
    # Most requests the node runs at once (its --max-running); 0 = unknown. The gateway
    # admits a request only where every hop has a free slot.
    max_running: int = 0
    # Tokens per KV block (--kv-block-size); 0 = unknown. A first hop starts a request
    # only when its prompt fits with one block to spare (node/engine/scheduler.py).
    kv_block_tokens: int = 0


@dataclass(frozen=True)
class ClusterState:
    num_layers: int
    nodes: tuple[NodeLoad, ...]
    # Measured round-trip times between nodes, ms, keyed (from, to).
    rtt_ms: Mapping[tuple[NodeId, NodeId], float] = field(default_factory=dict)
    # Requests the caller knows a node runs now, which its last report may not show yet
    # (a gateway's own open chains): the router takes the larger of the two. Cheaper
    # than a new `nodes` tuple per request, which the router would have to re-read.
    running_floor: Mapping[NodeId, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RouteRequest:
    request_id: str
    prompt_tokens: int
    max_tokens: int
    # Nodes not to use, e.g. one that just failed this request: route around it.
    avoid: frozenset[NodeId] = frozenset()


@dataclass(frozen=True)
class Hop:
    node_id: NodeId
    address: str
    range: LayerRange  # the layers this node runs for this request (may be part of its range)


@dataclass(frozen=True)
class Route:
    hops: tuple[Hop, ...]

    def covers(self, num_layers: int) -> bool:
        at = 0
        for hop in self.hops:
            if hop.range.start != at:
                return False
            at = hop.range.end
        return at == num_layers


# Who holds which layers while a solver works on it (None: stands by).
Assignments = dict[NodeId, LayerRange | None]
# Nodes with the range each holds, in no particular order (a region group, a packing).
Held = list[tuple[NodeCapacity, LayerRange]]
# One pipeline's stages in chain order, each node with the layers it runs: `Held`, ordered.
Pipeline = Held

# Entering a node costs a wait for the step it is running, whatever part of its range
# the hop uses: about half a step over its whole range. The router prices every hop
# with it, and the estimate prices a chain the same way, so phase 1 rates allocations
# as phase 2 will route them. It keeps chains from hopping more than they gain: a hop
# onto a big node for two layers waits for all of them, and every hop holds a sequence
# slot and KV on one more node (Little's law).
HOP_WAIT_STEPS = 0.5
