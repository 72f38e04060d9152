"""Overlap pass: a pipeline's fast nodes also hold some of their slow neighbour's layers.

A slow node with much memory (a Mac among GPUs) ends up holding the layers the others
cannot fit, and caps the whole pipeline. When a neighbour still has memory, it extends
its range into the bottleneck's layers; routing then runs those layers on whichever
holder is less loaded (a hop may use part of a range), so the slow node only carries
what nobody else can. Accepted only when the estimate (compute and KV) improves.
"""

from __future__ import annotations

from coordinator.scheduler.estimate import group_estimate
from coordinator.scheduler.perf import PerfModel
from coordinator.scheduler.types import NodeCapacity, Pipeline
from parallax.types import LayerRange

MAX_ROUNDS = 6


def widest_fit(
    perf: PerfModel, node: NodeCapacity, r: LayerRange, forward: bool, limit: int
) -> LayerRange:
    """`r` grown by up to `limit` layers in one direction while the node keeps room for
    a full batch of KV on every layer it holds."""
    mem = perf.mem.at(node)
    L = perf.num_layers
    busy = max(float(mem.reserve_tokens), perf.batch_size * perf.mean_context)
    best = r
    for extra in range(1, limit + 1):
        cand = (
            LayerRange(r.start, min(L, r.end + extra))
            if forward
            else LayerRange(max(0, r.start - extra), r.end)
        )
        weights = len(cand) * (mem.weight_bytes + mem.kv_bytes_per_token * busy)
        if weights + mem.extras(cand.start == 0, cand.end == L) > mem.usable(node.memory_bytes):
            break
        best = cand
    return best


def overlap(pipe: Pipeline, perf: PerfModel) -> Pipeline:
    """Neighbours of the bottleneck stage take over part of its layers, while it helps.

    Not under a minimum depth: grown ranges may reach the whole model, and a chain
    through one node would then undo the depth asked for."""
    if len(pipe) < 2 or perf.options.min_stages_when_possible > 1:
        return pipe
    best = list(pipe)
    score = group_estimate(best, perf).throughput_tok_s
    for _ in range(MAX_ROUNDS):
        rates = [perf.speed(n) / len(r) for n, r in best]
        b = min(range(len(best)), key=lambda i: rates[i])
        slow = best[b][1]
        improved = False
        for i, forward in ((b - 1, True), (b + 1, False)):
            if not 0 <= i < len(best):
                continue
            n, r = best[i]
            grown = widest_fit(perf, n, r, forward, len(slow) - 1)
            if grown == r:
                continue
            trial = list(best)
            trial[i] = (n, grown)
            got = group_estimate(trial, perf).throughput_tok_s
            if got > score * 1.01:
                best, score, improved = trial, got, True
        if not improved:
            break
    return best
