"""Expected throughput and per-token latency of an allocation, from the performance model.

Nodes are grouped by region: a region whose nodes cover every layer serves on its own
(chains stay inside it); the other regions pool into one group whose chains cross.
In a group, the latency-best chain gives the depth D and the token loop time T.
A node keeping S sequences' KV decodes about S / D of them per step (a deep chain
needs D batches in flight to keep every stage busy). The group's throughput is the
lesser of two flows that routes can carry (`flow.py`): one with each node's compute
(layer-tokens/s), one with its resident layer-sequences, divided by T (Little's law).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from coordinator.scheduler.flow import routable_flow
from coordinator.scheduler.perf import PerfModel
from coordinator.scheduler.types import HOP_WAIT_STEPS, Held, NodeCapacity, Pipeline
from parallax.types import LayerRange, NodeId


@dataclass(frozen=True)
class Estimate:
    throughput_tok_s: float
    latency_ms_per_token: float  # token loop time of the typical chain, at its operating batch
    depth: int  # hops of that chain


# Micro-batches a busy stage holds at once: the one it runs and the one waiting for it.
IN_FLIGHT_PER_STAGE = 2


def best_chain(held: Held, perf: PerfModel) -> Pipeline | None:
    """Latency-best chain (batch 1) covering all layers. Each hop runs a suffix of its
    node's range, which always suffices to complete a chain; it keeps this O(cuts x nodes)."""
    L = perf.num_layers
    by_start = sorted(held, key=lambda nr: (nr[1].start, nr[0].node_id))
    cuts = sorted({0, L, *(r.end for _n, r in held if r.end <= L)})
    best: dict[int, tuple[float, Pipeline]] = {0: (0.0, [])}
    active: Held = []
    k = 0
    one = {n.node_id: perf.layer_s(n, 1.0) for n, _r in held}  # per layer, batch 1
    hops: dict[tuple[str, str], float] = {}  # by region pair: few of them
    for a in cuts[:-1]:
        while k < len(by_start) and by_start[k][1].start <= a:
            active.append(by_start[k])
            k += 1
        active = [(n, r) for n, r in active if r.end > a]
        if a not in best:
            continue
        cost, chain = best[a]
        for n, r in active:
            hop = 0.0
            if chain:
                pair = (chain[-1][0].region, n.region)
                if pair not in hops:
                    hops[pair] = perf.hop_s(chain[-1][0], n)
                hop = hops[pair]
            # Entering a node waits for its step in progress: half of its whole range
            # (as the router prices a hop), so a short hop onto a big node is dear.
            t1 = one[n.node_id]
            c = cost + hop + (HOP_WAIT_STEPS * len(r) + r.end - a) * t1
            if r.end not in best or c < best[r.end][0] - 1e-15:
                best[r.end] = (c, [*chain, (n, LayerRange(a, r.end))])
    return best[L][1] if L in best else None


def group_estimate(held: Held, perf: PerfModel) -> Estimate:
    chain = best_chain(held, perf)
    if chain is None:
        return Estimate(0.0, math.inf, 0)
    depth = len(chain)
    L = perf.num_layers
    # Continuous batching on a chain of D > 1 stages settles at about 2D micro-batches:
    # while one runs on a stage the next waits for it, so a stage decodes S / 2D
    # sequences per step and a token waits about one step at every stage (simulator,
    # mixed-16: 58 running over 5 stages decoded 5.6 per step).
    waves = IN_FLIGHT_PER_STAGE if depth > 1 else 1
    seqs = {n.node_id: perf.resident_seqs(n, r) for n, r in held}
    # A stage decodes its share of the chain's resident sequences per step: the batch is
    # bounded by KV room (and --max-running, inside `resident_seqs`), not a constant.
    # A chain through a node that does not hold every layer has two stages or more,
    # whatever the typical chain: a node holding most of the model beside one that
    # holds all of it still serves in chains of two (or it would get the batch of one).
    stages = {n.node_id: max(depth, 1 if len(r) >= L else 2) for n, r in held}
    batch = {
        nid: max(s / (stages[nid] * (IN_FLIGHT_PER_STAGE if stages[nid] > 1 else 1)), 1e-9)
        for nid, s in seqs.items()
    }
    # A stage's step runs its node's whole range, whatever part this chain uses.
    full = {n.node_id: len(r) for n, r in held}
    loop = sum(
        (len(r) + (waves - 1) * full[n.node_id]) * perf.layer_s(n, batch[n.node_id])
        + (perf.head_s(n, batch[n.node_id]) if r.end >= L else 0.0)
        for n, r in chain
    )
    if depth > 1:
        loop += sum(
            perf.hop_s(a, b) for (a, _), (b, _) in zip(chain, chain[1:] + chain[:1], strict=True)
        )
    # Compute and KV bound the flow separately. One flow with each node's min of the two
    # is the stricter reading of this model, but it rates packed overlapping spans far
    # below what the simulator serves (kit p04: 1,128 tok/s simulated against 755 for
    # the pipelines it picks instead): the partial-visit costs here are the weak part.
    rates = [
        (r, perf.range_rate(n, r, batch[n.node_id]) if seqs[n.node_id] >= 1 else 0.0)
        for n, r in held
    ]
    kv_seqs = [(r, seqs[n.node_id] * len(r)) for n, r in held]  # in layer-sequences
    flow = min(routable_flow(rates, L), routable_flow(kv_seqs, L) / loop)
    return Estimate(max(flow, 0.0), loop * 1e3, depth)


# Windows longer than this many cuts are not checked: bounded cost at a thousand nodes.
MAX_WINDOW_CUTS = 48


def window_flow(supply: Sequence[tuple[LayerRange, float]], num_layers: int) -> float:
    """Most flow every layer can carry when each holder spreads its supply (per-layer
    units) over its layers as routing likes: the Hall bound, min over windows W of
    (supply of the holders meeting W) / |W|, over contiguous windows only. Windows start
    and end at cuts, where the bound is tightest. Exact for pipelines and for replicas
    of them; with odd overlaps it can overestimate (the full bound checks every set of
    layers, exponential), which routing then shows up as queueing in the simulator."""
    cuts = sorted(
        {0, num_layers, *(r.start for r, _ in supply), *(min(r.end, num_layers) for r, _ in supply)}
    )
    index = {c: j for j, c in enumerate(cuts)}
    ends_by = [0.0] * len(cuts)  # supply of holders ending at cut j
    starts_by = [0.0] * len(cuts)
    total = 0.0
    for r, x in supply:
        ends_by[index[min(r.end, num_layers)]] += x
        starts_by[index[r.start]] += x
        total += x
    ended = [0.0] * len(cuts)  # holders with end <= cut j
    acc = 0.0
    for j in range(len(cuts)):
        acc += ends_by[j]
        ended[j] = acc
    started_after = [0.0] * (len(cuts) + 1)  # holders with start >= cut j
    for j in range(len(cuts) - 1, -1, -1):
        started_after[j] = started_after[j + 1] + starts_by[j]
    best = math.inf
    for a in range(len(cuts) - 1):
        for b in range(a + 1, min(len(cuts), a + 1 + MAX_WINDOW_CUTS)):
            meet = total - ended[a] - started_after[b]
            best = min(best, meet / (cuts[b] - cuts[a]))
    return max(best, 0.0)


def estimate(
    assignments: Mapping[NodeId, LayerRange | None],
    nodes: Sequence[NodeCapacity],
    perf: PerfModel,
) -> Estimate:
    held = [(n, assignments[n.node_id]) for n in nodes if assignments.get(n.node_id) is not None]
    by_region: dict[str, Held] = {}
    for n, r in held:
        by_region.setdefault(n.region, []).append((n, r))  # type: ignore[arg-type]
    groups: list[Held] = []
    pooled: Held = []
    for region in sorted(by_region):
        part = by_region[region]
        if covers_all(part, perf.num_layers):
            groups.append(part)
        else:
            pooled.extend(part)
    if pooled:
        groups.append(pooled)
    parts = [group_estimate(g, perf) for g in groups]
    total = sum(p.throughput_tok_s for p in parts)
    if total <= 0:
        return Estimate(0.0, min((p.latency_ms_per_token for p in parts), default=math.inf), 0)
    latency = sum(p.latency_ms_per_token * p.throughput_tok_s for p in parts) / total
    depth = max(parts, key=lambda p: p.throughput_tok_s).depth
    return Estimate(total, latency, depth)


def covers_all(held: Held, num_layers: int) -> bool:
    at = 0
    for r in sorted(r for _n, r in held):
        if r.start > at:
            return False
        at = max(at, r.end)
    return at >= num_layers
