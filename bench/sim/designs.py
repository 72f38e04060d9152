"""The designs compared in the benchmark: ours and four re-implemented from their papers.

Each design is an allocation (who holds which layers) plus a routing policy for the
simulator. The baselines follow their published descriptions, simplified:
- parallax: GradientHQ Parallax. Nodes in join order; k pipelines maximising
  k^2 / total stages; weights capped at 65% of memory; layers by water-filling on
  TFLOPS; round-robin over the fixed pipelines; regions ignored; the rest idle.
- petals: each server in join order takes the span of blocks with the least total
  throughput so far, as many blocks as fit; clients route by Dijkstra over RTT plus
  per-block compute, without live load. A server runs one session's inference step at
  a time, first come first served: its `PrioritizedTaskPool` "does *not* combine
  incoming requests into batches" (petals/server/task_pool.py) and gives every
  inference step the same priority (task_prioritizer.py). Petals 2.2 measured on our
  2-core box agreed: 8 clients got 12-16 tok/s together, one alone about 10.
  "petals-batched" is the same allocation and routing on our continuous batching.
- exo: one ring over every node, layers in proportion to memory.
- helix: MILP maximising the layer flow (our CP-SAT model over all nodes, regions
  ignored); requests routed by weighted random choice per layer span along the flow.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

from bench.sim.cost import KV_BLOCK_TOKENS
from bench.sim.engine import Chain, Policy, SimView
from bench.sim.workload import SimRequest
from coordinator.scheduler.apportion import bounds, water_fill
from coordinator.scheduler.baselines import parallax_allocation as parallax_allocation
from coordinator.scheduler.baselines import petals_allocation as petals_allocation
from coordinator.scheduler.exact import solve_group
from coordinator.scheduler.perf import PerfModel
from coordinator.scheduler.route import Router
from coordinator.scheduler.types import (
    Assignments,
    ClusterState,
    NodeCapacity,
    NodeLoad,
    RouteRequest,
)
from parallax.types import LayerRange

# Designs whose servers batch no requests together (the simulator's `batching`).
UNBATCHED = frozenset({"petals"})


# ---- routing policies ----
def ours_policy() -> Policy:
    """Our router on what nodes report: running counts, KV room, measured step times."""

    def pick(req: SimRequest, view: SimView) -> Chain:
        loads, regions = [], {}
        cost = view.cost
        mean_ctx = req.prompt_tokens + req.output_tokens // 2
        for nid, s in view.nodes.items():
            full = s.running >= cost.max_running
            fits = min(cost.max_running, s.kv_blocks * KV_BLOCK_TOKENS // max(1, mean_ctx))
            loads.append(
                NodeLoad(
                    node_id=nid,
                    address="",
                    range=s.range,
                    running=s.running,
                    # A node at its running cap takes no one now: as full as no KV.
                    kv_free_tokens=0 if full else s.kv_free_tokens,
                    kv_capacity_tokens=s.kv_blocks * KV_BLOCK_TOKENS,
                    layer_latency_ms=s.layer_ms,
                    region=s.node.region,
                    layer_tokens_per_s=cost.layer_rate(s.node, fits, mean_ctx),
                )
            )
            regions.setdefault(s.node.region, nid)
        rtt = {}
        for (ra, a), (rb, b) in itertools.product(regions.items(), repeat=2):
            if a != b:
                rtt[(a, b)] = cost.options.link(ra, rb).rtt_ms
        state = ClusterState(cost.num_layers, tuple(loads), rtt)
        request = RouteRequest(str(req.request_id), req.prompt_tokens, req.output_tokens)
        return [(h.node_id, h.range) for h in Router(state).route(request).hops]

    return pick


def round_robin_policy(pipelines: list[Chain]) -> Policy:
    counter = itertools.count()

    def pick(req: SimRequest, view: SimView) -> Chain:
        return pipelines[next(counter) % len(pipelines)]

    return pick


def dijkstra_policy(seed: int) -> Policy:
    """Petals' min-latency route: RTT plus per-block compute, no live load; a little
    jitter as Petals' client adds, so ties do not all land on one server."""
    rng = random.Random(seed)

    def pick(req: SimRequest, view: SimView) -> Chain:
        cost = view.cost
        L = cost.num_layers
        best: dict[int, tuple[float, Chain]] = {0: (0.0, [])}
        for a in range(L):
            if a not in best:
                continue
            at, chain = best[a]
            for nid, s in view.nodes.items():
                if not (s.range.start <= a < s.range.end):
                    continue
                prev = view.nodes[chain[-1][0]].node if chain else s.node
                hop = cost.hop_s(prev, s.node) if chain else 0.0
                per = cost.step_s(s.node, 1, [(1, req.prompt_tokens)], 0) * rng.uniform(0.9, 1.1)
                b = s.range.end
                c = at + hop + (b - a) * per
                if b not in best or c < best[b][0]:
                    best[b] = (c, [*chain, (nid, LayerRange(a, b))])
        return best[L][1]

    return pick


def flow_weighted_policy(seed: int) -> Policy:
    """Helix-style: at each position pick a holder with probability ∝ its flow share."""
    rng = random.Random(seed)

    def pick(req: SimRequest, view: SimView) -> Chain:
        cost, at, chain = view.cost, 0, []
        L = cost.num_layers
        while at < L:
            cands = [
                (nid, s)
                for nid, s in sorted(view.nodes.items())
                if s.range.start <= at < s.range.end
            ]
            weights = [cost.layer_rate(s.node, 16, 512) / len(s.range) for _n, s in cands]
            nid, s = rng.choices(cands, weights)[0]
            chain.append((nid, LayerRange(at, s.range.end)))
            at = s.range.end
        return chain

    return pick


# ---- baseline allocations (parallax and petals: coordinator/scheduler/baselines.py,
# which `parallax run --allocation-policy` uses on live clusters too) ----
def exo_allocation(nodes: Sequence[NodeCapacity], perf: PerfModel) -> tuple[Assignments, Chain]:
    ring = sorted(nodes, key=lambda n: (-n.memory_bytes, n.node_id))
    L = perf.num_layers
    caps = [
        perf.mem.max_layers(n.memory_bytes, i == 0, i == len(ring) - 1) for i, n in enumerate(ring)
    ]
    use = [(n, c) for n, c in zip(ring, caps, strict=True) if c > 0][:L]
    counts = water_fill(L, [n.memory_bytes for n, _c in use], [c for _n, c in use])
    out: Assignments = {n.node_id: None for n in nodes}
    if counts is None:
        return out, []
    chain = [
        (n.node_id, LayerRange(a, b)) for (n, _c), (a, b) in zip(use, bounds(counts), strict=True)
    ]
    out.update(dict(chain))
    return out, chain


def helix_allocation(
    nodes: Sequence[NodeCapacity], perf: PerfModel, time_limit_s: float
) -> Assignments:
    eligible = [n for n in nodes if perf.mem.max_layers(n.memory_bytes) >= 1]
    got, _obj, _bound, _status = solve_group(eligible, perf, time_limit_s)
    out: Assignments = {n.node_id: None for n in nodes}
    out.update(got or {})
    return out
