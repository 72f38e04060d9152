"""The fast heuristic: region-local replicated pipelines, sized by the performance model.

1. Regions that cannot hold a whole model pool with their nearest region; chains never
   cross a slow link when they do not have to.
2. In each group, for a handful of pipeline counts k (all up to 16, a geometric ladder
   beyond, refined around the best), nodes are dealt into k pipelines by memory (LPT),
   each pipeline's layers apportioned by node speed under memory caps, and the whole
   scored with the performance model (compute, KV room by Little's law, latency).
3. The best k wins; nodes that only add a hop (less than half a layer's worth of speed)
   stand by.
4. A packed candidate (`pack.py`: every node as many layers as fit, spans overlapping,
   Petals-style but inside the group's region) competes with the best k on the same
   performance model; the higher expected throughput wins. Its spans are aligned
   (each starts where another ends) when the estimate rates that no lower.

Cost is O(k-candidates x nodes): about a second at a thousand nodes.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from coordinator.scheduler.apportion import balance, bounds
from coordinator.scheduler.estimate import Estimate, group_estimate
from coordinator.scheduler.overlap import overlap
from coordinator.scheduler.pack import pack
from coordinator.scheduler.perf import PerfModel
from coordinator.scheduler.rungs import best_rung
from coordinator.scheduler.simple import pipeline_order
from coordinator.scheduler.types import NodeCapacity, Pipeline
from parallax.types import LayerRange

# A tier pipeline takes nodes until they have this much more memory than the bare model.
TIER_SLACK = 1.1


@dataclass(frozen=True)
class GroupPlan:
    pipelines: list[Pipeline]
    throughput: float
    latency_ms: float
    kind: str = "pipeline"  # what the reason says: "pipeline", "tiered pipeline", "packed"

    def shape(self) -> str:
        if self.kind == "packed":
            return f"packed overlapping spans on {len(self.pipelines[0])} node(s)"
        return f"{len(self.pipelines)} {self.kind}(s)"


def region_groups(nodes: Sequence[NodeCapacity], perf: PerfModel) -> list[list[NodeCapacity]]:
    """Nodes by region; regions too small for one model pool with the closest big one."""
    need = perf.mem.total_need()
    by_region: dict[str, list[NodeCapacity]] = {}
    for n in nodes:
        by_region.setdefault(n.region, []).append(n)
    usable = perf.mem.usable_equivalent
    big = {r: ns for r, ns in by_region.items() if sum(usable(n) for n in ns) >= need}
    small = sorted(r for r in by_region if r not in big)
    pool = [n for r in small for n in by_region[r]]
    groups = {r: list(ns) for r, ns in big.items()}
    if pool and big and sum(usable(n) for n in pool) < need:
        anchor = max(small, key=lambda r: (sum(n.memory_bytes for n in by_region[r]), r))
        nearest = min(big, key=lambda r: (perf.options.link(anchor, r).rtt_ms, r))
        groups[nearest] = groups[nearest] + pool
    elif pool:
        groups["+".join(small)] = pool
    return [sorted(groups[g], key=lambda n: n.node_id) for g in sorted(groups)]


def deal(nodes: Sequence[NodeCapacity], k: int, perf: PerfModel) -> list[list[NodeCapacity]]:
    """Longest-processing-time dealing by memory: each node joins the emptiest pipeline."""
    parts: list[list[NodeCapacity]] = [[] for _ in range(k)]
    emptiest = [(0.0, j) for j in range(k)]  # (memory dealt, pipeline): a heap, ties by index
    for n in sorted(nodes, key=lambda n: (-n.memory_bytes, -perf.speed(n), n.node_id)):
        load, i = emptiest[0]
        parts[i].append(n)
        heapq.heapreplace(emptiest, (load + n.memory_bytes, i))
    return parts


def speed_layout(
    order: Sequence[NodeCapacity],
    perf: PerfModel,
    reserve_tokens: float,
    batch: float | None = None,
) -> Pipeline | None:
    """Each node's range in `order`, layers apportioned by speed (at `batch` sequences a
    step; default the options' batch) under memory caps that keep `reserve_tokens` of
    KV room on every layer, never under one full context."""
    mem = perf.mem
    kv_tokens = max(reserve_tokens, mem.reserve_tokens)
    k = len(order)
    caps = []
    for i, n in enumerate(order):
        own = mem.at(n)  # its own dtype and weight format
        own_layer = own.weight_bytes + own.kv_bytes_per_token * kv_tokens
        room = own.usable(n.memory_bytes) - own.extras(i == 0, i == k - 1)
        caps.append(min(mem.num_layers, int(room // own_layer)) if room > 0 else 0)
    b = float(perf.batch_size) if batch is None else max(batch, 1.0)
    # Even stage times; the last stage also runs the head every step.
    head = [0.0] * (k - 1) + [perf.head_s(order[-1], b)]
    counts = balance(mem.num_layers, [perf.layer_s(n, b) for n in order], head, caps)
    if counts is None:
        return None
    return [(n, LayerRange(a, b)) for n, (a, b) in zip(order, bounds(counts), strict=True)]


def build_pipeline(
    part: Sequence[NodeCapacity], perf: PerfModel
) -> tuple[Pipeline, Estimate] | None:
    """Best layout of one pipeline's nodes; drops nodes that only add a hop."""
    opts = perf.options
    nodes = sorted(part, key=lambda n: (-perf.speed(n), n.node_id))
    if opts.max_stages is not None:
        nodes = nodes[: opts.max_stages]
    best = best_layout(nodes, perf)
    if best is not None:
        grown = overlap(best[0], perf)
        if grown is not best[0]:
            best = (grown, group_estimate(grown, perf))
    # A node with under half a layer's worth of the pipeline's speed only adds a hop:
    # stand it by when that costs under 2% of the pipeline's throughput.
    while best is not None and len(nodes) > max(1, perf.options.min_stages_when_possible):
        total = sum(perf.speed(n) for n in nodes)
        if perf.speed(nodes[-1]) / total * perf.num_layers >= 0.5:
            break
        without = best_layout(nodes[:-1], perf)
        if without is None or without[1].throughput_tok_s < 0.98 * best[1].throughput_tok_s:
            break
        nodes, best = nodes[:-1], without
    return best


def best_layout(nodes: Sequence[NodeCapacity], perf: PerfModel) -> tuple[Pipeline, Estimate] | None:
    target = perf.options.latency_target_ms
    best: tuple[Pipeline, Estimate] | None = None
    for cand, est in candidate_layouts(nodes, perf):
        if target and est.latency_ms_per_token > target:
            continue
        if best is None or est.throughput_tok_s > best[1].throughput_tok_s * (1 + 1e-9):
            best = (cand, est)
    return best


def candidate_layouts(
    nodes: Sequence[NodeCapacity], perf: PerfModel
) -> list[tuple[Pipeline, Estimate]]:
    """Layouts of one pipeline, one per KV target, with their estimates: for S sequences
    resident on every stage, each node holds at most the layers that leave room for S
    sequences' KV at the mean context, apportioned so stage times at the batch S / depth
    are even."""
    # The fastest node last, where the head runs every step; or the biggest nodes at
    # the ends, where the embedding and head take memory.
    fast_last = sorted(nodes, key=lambda n: (perf.speed(n), n.node_id))
    depth = max(1, len(nodes))
    out: list[tuple[Pipeline, Estimate]] = []
    seen: dict[tuple[LayerRange, ...], float] = {}  # neighbouring rungs often agree
    for order in (fast_last, pipeline_order(nodes)):
        if out:
            break  # the second order is for when the first cannot fit the ends

        def score(seqs: float, order: list[NodeCapacity] = order) -> float:
            got = speed_layout(order, perf, seqs * perf.mean_context, seqs / depth)
            if got is None:
                return -math.inf
            key = tuple(r for _n, r in got)
            if key not in seen:
                est = group_estimate(got, perf)
                out.append((got, est))
                seen[key] = est.throughput_tok_s
            return seen[key]

        best_rung(score, perf)
    return out


def plan_group(nodes: Sequence[NodeCapacity], perf: PerfModel, min_stages: int) -> GroupPlan | None:
    need = perf.mem.total_need()
    kmax = max(1, min(len(nodes), int(sum(perf.mem.usable_equivalent(n) for n in nodes) // need)))
    kmax = max(1, min(kmax, len(nodes) // max(1, min(min_stages, len(nodes)))))
    tried: dict[int, GroupPlan | None] = {}
    memo: Memo = {}

    def attempt(k: int) -> GroupPlan | None:
        if k not in tried:
            tried[k] = plan_k(nodes, k, perf, memo)
        return tried[k]

    ladder = list(range(1, kmax + 1)) if kmax <= 16 else geometric(kmax, kmin(nodes, perf))
    for k in ladder:
        attempt(k)
    for _ in range(5):  # refine around the best found so far
        best_k = best_of(tried)
        if best_k is None:
            break
        fresh = [k for k in (best_k - 1, best_k + 1, (best_k + kmax) // 2) if 1 <= k <= kmax]
        fresh = [k for k in fresh if k not in tried]
        if not fresh:
            break
        for k in fresh:
            attempt(k)
    best_k = best_of(tried)
    plan = tried[best_k] if best_k is not None else None
    for other in (tiered_plan(nodes, perf, min_stages, memo), packed_plan(nodes, perf, min_stages)):
        if other is not None and (plan is None or other.throughput > plan.throughput):
            plan = other
    return plan


def tiered_plan(
    nodes: Sequence[NodeCapacity], perf: PerfModel, min_stages: int, memo: Memo
) -> GroupPlan | None:
    """Pipelines of like nodes: fastest first, each pipeline takes nodes until they
    hold the model, leftovers join the last. Each pipeline keeps its own requests'
    KV, so when sequences in flight bound throughput (Little's law), a short pipeline
    of fast nodes serves far more than a fast node slowed by a slow partner; LPT
    dealing mixes them."""
    need = perf.mem.total_need()
    order = sorted(nodes, key=lambda n: (-perf.speed(n), n.node_id))
    parts: list[list[NodeCapacity]] = []
    cur: list[NodeCapacity] = []
    room = 0.0
    for n in order:
        cur.append(n)
        room += perf.mem.usable_equivalent(n)
        # Some slack over the bare weights: the layout also needs KV room per stage.
        if room >= TIER_SLACK * need and len(cur) >= min_stages:
            parts.append(cur)
            cur, room = [], 0.0
    if cur and parts:
        parts[-1].extend(cur)
    elif cur:
        parts.append(cur)
    return plan_of(parts, perf, memo, "tiered pipeline")


def packed_plan(
    nodes: Sequence[NodeCapacity], perf: PerfModel, min_stages: int
) -> GroupPlan | None:
    """The packed candidate as a one-'pipeline' plan (its spans overlap). Not offered
    under a minimum depth or a hop cap: a packed node may hold the whole model, and a
    stitched chain's hop count is the router's to choose."""
    opts = perf.options
    if min_stages > 1 or opts.max_stages is not None:
        return None
    plans: list[tuple[GroupPlan, bool]] = []  # and whether its spans are aligned

    seen: dict[tuple[LayerRange, ...], float] = {}

    def score(seqs: float, aligned: bool) -> float:
        held = pack(nodes, perf, seqs, aligned)
        if held is None:
            return -math.inf
        key = tuple(r for _n, r in held)
        if key in seen:
            return seen[key]
        est = group_estimate(held, perf)
        seen[key] = est.throughput_tok_s
        if opts.latency_target_ms and est.latency_ms_per_token > opts.latency_target_ms:
            return 0.0
        plan = GroupPlan([held], est.throughput_tok_s, est.latency_ms_per_token, "packed")
        plans.append((plan, aligned))
        return est.throughput_tok_s

    # Each rung of KV room trades replicas (spans overlap more) against batch size.
    got = {0.0: score(0.0, False), **best_rung(lambda s: score(s, False), perf)}
    # Aligned spans at the free packing's best rung (a ladder of their own would
    # double the cost at a thousand nodes; both move alike with KV room).
    score(max(got, key=lambda s: (got[s], -s)), True)
    free = [p for p, aligned in plans if not aligned]
    if not free:
        return None
    # Aligned spans (see `pack`) replace the free packing when the estimate rates them
    # at least as high. The estimate lets a hop run any part of a range at the cost of
    # its layers, while the engine pays a memory-bound step for the whole range, so
    # where it sees no difference the whole-range hops are the safer plan. They do not
    # compete with the pipelines on their own: where the free packing loses to those,
    # the aligned one's edge rests on the same partial-visit credit (kit p01: rated 3%
    # above six replicas, it serves 36% less in the simulator).
    best = max(free, key=lambda p: p.throughput)
    even = [p for p, aligned in plans if aligned and p.throughput >= best.throughput]
    return replace(max(even, key=lambda p: p.throughput, default=best), throughput=best.throughput)


def kmin(nodes: Sequence[NodeCapacity], perf: PerfModel) -> int:
    """Fewest pipelines worth trying in a big group: each at most four times as deep as
    the mean node needs to hold the model. Deeper ones lose on latency and KV, and they
    cost the most to build (the standby pass is quadratic in a pipeline's nodes)."""
    mean = sum(perf.mem.usable_equivalent(n) for n in nodes) / max(1, len(nodes))
    depth = max(1, math.ceil(perf.mem.total_need() / max(mean, 1.0)))
    return max(1, len(nodes) // (4 * depth))


def geometric(kmax: int, lo: int = 1) -> list[int]:
    lo = max(1, min(lo, kmax))
    ks, k = {lo, kmax}, float(lo)
    while k < kmax:
        ks.add(int(k))
        k *= 2.0
    return sorted(ks)


def best_of(tried: dict[int, GroupPlan | None]) -> int | None:
    """Highest throughput; within 2% of it, the lowest latency (fewest stages)."""
    ok = {k: p for k, p in tried.items() if p is not None and p.throughput > 0}
    if not ok:
        return None
    top = max(p.throughput for p in ok.values())
    near = [k for k, p in ok.items() if p.throughput >= 0.98 * top]
    return min(near, key=lambda k: (ok[k].latency_ms, -ok[k].throughput, k))


# Pipelines already built, by their nodes' specs in speed order: stage positions and
# ranges, and the estimate. Volunteer pools repeat a few GPU models, so many of the
# pipelines dealt for different k are alike; this halves the work at a thousand nodes.
Memo = dict[tuple, "tuple[list[tuple[int, LayerRange]], Estimate] | None"]


def build_alike(
    part: Sequence[NodeCapacity], perf: PerfModel, memo: Memo
) -> tuple[Pipeline, Estimate] | None:
    """`build_pipeline`, reused for a pipeline of nodes with the same specs (same
    memory, speed and region stage by stage: same ranges fit, same estimate)."""
    order = sorted(part, key=lambda n: (-perf.speed(n), n.node_id))
    key = tuple(
        (n.memory_bytes, n.flops, n.mem_bandwidth, n.region, n.layer_latency_ms, n.footprint)
        for n in order
    )
    if key not in memo:
        got = build_pipeline(order, perf)
        pos = {n.node_id: i for i, n in enumerate(order)}
        memo[key] = None if got is None else ([(pos[n.node_id], r) for n, r in got[0]], got[1])
    hit = memo[key]
    if hit is None:
        return None
    return [(order[i], r) for i, r in hit[0]], hit[1]


def plan_k(
    nodes: Sequence[NodeCapacity], k: int, perf: PerfModel, memo: Memo | None = None
) -> GroupPlan | None:
    return plan_of(deal(nodes, k, perf), perf, {} if memo is None else memo)


def plan_of(
    parts: Sequence[Sequence[NodeCapacity]], perf: PerfModel, memo: Memo, kind: str = "pipeline"
) -> GroupPlan | None:
    """One pipeline per part; throughput adds up, latency is throughput-weighted."""
    pipes: list[Pipeline] = []
    thr = lat = 0.0
    for part in parts:
        got = build_alike(part, perf, memo)
        if got is None:
            return None
        pipes.append(got[0])
        thr += got[1].throughput_tok_s
        lat += got[1].latency_ms_per_token * got[1].throughput_tok_s
    return GroupPlan(pipes, thr, lat / thr if thr > 0 else 0.0, kind)


def plan_fast(
    nodes: Sequence[NodeCapacity], perf: PerfModel, min_stages: int = 1
) -> list[Pipeline] | None:
    """Pipelines of the best plan, or None when some group cannot hold the model at all."""
    got = plan_fast_shaped(nodes, perf, min_stages)
    return None if got is None else got[0]


def plan_fast_shaped(
    nodes: Sequence[NodeCapacity], perf: PerfModel, min_stages: int = 1
) -> tuple[list[Pipeline], str] | None:
    """`plan_fast` and what it built per region group, for the allocation's reason."""
    eligible = [n for n in nodes if perf.mem.at(n).max_layers(n.memory_bytes) >= 1]
    groups = region_groups(eligible, perf)
    plans = [plan_group(g, perf, min_stages) for g in groups]
    if any(p is None for p in plans) and not any(p is not None for p in plans):
        return None
    shapes = [
        f"{'+'.join(sorted({n.region for n in g}))}: {p.shape()}"
        for g, p in zip(groups, plans, strict=True)
        if p is not None
    ]
    pipes = [pipe for p in plans if p is not None for pipe in p.pipelines]
    return pipes, "; ".join(shapes)
