"""Baseline allocation policies: other systems' layer placement, to compare against ours.

`parallax run --allocation-policy parallax|petals` places layers as these do, on a live
cluster, so that one benchmark serves the same nodes and load under each (the gateway
still routes with our router). They follow the published descriptions, simplified:
- parallax: GradientHQ Parallax. Nodes in join order; k pipelines maximising
  k^2 / total stages; weights capped at 65% of memory; layers by water-filling on
  measured FLOP/s; the rest stand by.
- petals: each server in join order takes the span of blocks with the least total
  throughput so far, as many blocks as fit.
Both re-solve from scratch on every membership change (neither moves minimally).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from coordinator.scheduler.allocate import allocate
from coordinator.scheduler.apportion import bounds, water_fill
from coordinator.scheduler.estimate import estimate
from coordinator.scheduler.options import AllocateOptions
from coordinator.scheduler.perf import PerfModel
from coordinator.scheduler.types import Allocation, Assignments, NodeCapacity
from parallax.errors import InvalidArgument, NotCovered
from parallax.models.spec import ModelSpec
from parallax.types import LayerRange, NodeId

POLICIES = ("ours", "parallax", "petals")
PARALLAX_WEIGHT_SHARE = 0.65  # Parallax plans weights in this share of a node's memory

Chain = list[tuple[NodeId, LayerRange]]


def parallax_allocation(
    nodes: Sequence[NodeCapacity], perf: PerfModel
) -> tuple[Assignments, list[Chain]]:
    """(assignments, the fixed pipelines); no pipelines when the nodes cannot hold one."""
    mem, L = perf.mem, perf.num_layers

    def cap(n: NodeCapacity, first: bool, last: bool) -> int:
        room = n.memory_bytes * PARALLAX_WEIGHT_SHARE - mem.extras(first, last)
        return max(0, min(L, int(room // mem.weight_bytes)))

    def pipeline(group: list[NodeCapacity]) -> Chain | None:
        caps = [cap(n, i == 0, i == len(group) - 1) for i, n in enumerate(group)]
        counts = water_fill(L, [n.flops for n in group], caps)
        if counts is None:
            return None
        return [
            (n.node_id, LayerRange(a, b)) for n, (a, b) in zip(group, bounds(counts), strict=True)
        ]

    def build(k: int) -> list[Chain] | None:
        pipes, group = [], []
        for n in nodes:  # join order
            group.append(n)
            got = pipeline(group)
            if got is not None:
                pipes.append(got)
                group = []
                if len(pipes) == k:
                    return pipes
        return None

    best: tuple[float, list[Chain]] | None = None
    for k in range(1, len(nodes) + 1):
        pipes = build(k)
        if pipes is None:
            break
        score = k * k / sum(len(p) for p in pipes)
        if best is None or score > best[0]:
            best = (score, pipes)
    out: Assignments = {n.node_id: None for n in nodes}
    if best is None:
        return out, []
    for p in best[1]:
        out.update(dict(p))
    return out, best[1]


def petals_allocation(nodes: Sequence[NodeCapacity], perf: PerfModel) -> Assignments:
    L = perf.num_layers
    thr = [0.0] * L
    out: Assignments = {}
    for n in nodes:  # join order
        k = perf.mem.max_layers(n.memory_bytes, first=True, last=True) or perf.mem.max_layers(
            n.memory_bytes
        )
        if k < 1:
            out[n.node_id] = None
            continue
        windows = []
        for a in range(0, L - k + 1):
            r = LayerRange(a, a + k)
            if perf.mem.fits(n.memory_bytes, r):
                # Petals' block_selection: the window whose sorted throughputs are
                # smallest, so a window with a bare block always wins.
                windows.append((sorted(thr[a : a + k]), a, r))
        if not windows:
            out[n.node_id] = None
            continue
        _t, _a, r = min(windows)
        out[n.node_id] = r
        for x in range(r.start, r.end):
            thr[x] += perf.speed(n) / len(r)
    return out


def allocate_baseline(
    policy: str, nodes: Sequence[NodeCapacity], model: ModelSpec, options: AllocateOptions
) -> Allocation:
    """`policy`'s allocation of `nodes`, judged by our performance model. Raises
    NotCovered when it leaves a layer unheld (as `allocate` does)."""
    t0 = time.perf_counter()
    perf = PerfModel.of(model, options)
    if policy == "parallax":
        assignments, _pipes = parallax_allocation(nodes, perf)
    elif policy == "petals":
        assignments = petals_allocation(nodes, perf)
    else:
        raise InvalidArgument(f"no baseline allocation policy {policy!r}: parallax or petals")
    held = set().union(*(range(r.start, r.end) for r in assignments.values() if r is not None))
    if len(held) < perf.num_layers:
        raise NotCovered(
            f"the {policy} policy leaves layers {sorted(set(range(perf.num_layers)) - held)[:8]} "
            "unheld with these nodes; add memory or nodes, or use --allocation-policy ours"
        )
    est = estimate(assignments, nodes, perf)
    used = sum(r is not None for r in assignments.values())
    return Allocation(
        assignments=dict(sorted(assignments.items())),
        throughput_tok_s=est.throughput_tok_s,
        latency_ms_per_token=est.latency_ms_per_token,
        solver=policy,
        solve_s=time.perf_counter() - t0,
        reason=(
            f"{policy} baseline allocation (--allocation-policy {policy}): {used} of "
            f"{len(assignments)} nodes hold layers; expect {est.throughput_tok_s:,.0f} tok/s "
            f"at {est.latency_ms_per_token:.1f} ms/token"
        ),
    )


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise InvalidArgument(
            f"allocation policy {policy!r}: expected one of {', '.join(POLICIES)} "
            "(--allocation-policy)"
        )
    return policy


def allocate_by(
    policy: str, nodes: Sequence[NodeCapacity], model: ModelSpec, options: AllocateOptions
) -> Allocation:
    """Our allocation (`allocate`, moving as little as it can) or a baseline's."""
    if check_policy(policy) == "ours":
        return allocate(nodes, model, options)
    return allocate_baseline(policy, nodes, model, options)
