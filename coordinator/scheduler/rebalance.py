"""Saturation pass: re-cut a pipeline so its stages are even at the batch KV allows.

The layouts are cut so stage times are even at the operating batch the estimate
expects (resident sequences over twice the depth): there the weights dominate a
step, so fast-bandwidth nodes get many layers. Under saturation a node decodes as
many sequences as its KV room holds, and then its share should follow its capacity
at that batch, which can rank nodes quite differently (compute, KV room). A
pipeline serves at most its slowest stage's rate, so a cut that is even at the
operating batch can leave most of the pipeline idle once the load grows.

For a target rate tau every stage has a most layers it can hold and still carry tau
tokens/s at its KV-bounded batch (`ceilings`). The pass takes the highest tau whose
ceilings still cover the model while the estimate (compute and Little's law at the
mean context) stays within `ESTIMATE_SLACK` of the layout it started from: between two
near-equal plans for the expected load, it keeps the one with more headroom. Layers
go to stages as the original cut had them, clamped to the ceilings; what is left over
goes to the stages that add least to a token's loop time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from coordinator.scheduler.estimate import Estimate, group_estimate
from coordinator.scheduler.perf import PerfModel
from coordinator.scheduler.types import NodeCapacity, Pipeline
from parallax.types import LayerRange

# The estimate may lose this share for a higher saturation rate: it is the same
# "within 2% is a tie" the pipeline-count search uses.
ESTIMATE_SLACK = 0.02
# Bisection steps on the target rate: 2^-12 of the range, well under a layer.
STEPS = 12


def is_partition(pipe: Pipeline, num_layers: int) -> bool:
    """Stages cut the model into consecutive ranges, each node once."""
    at = 0
    for _n, r in pipe:
        if r.start != at or len(r) < 1:
            return False
        at = r.end
    return at == num_layers and len({n.node_id for n, _r in pipe}) == len(pipe)


def stage_rates(perf: PerfModel, pipe: Sequence[NodeCapacity]) -> list[list[float]]:
    """rates[i][k]: tokens/s stage i carries holding k layers (0 where they do not fit
    with one full context of KV), at the batch its KV room allows at the mean context."""
    L = perf.num_layers
    last = len(pipe) - 1
    out = []
    for i, n in enumerate(pipe):
        row = [0.0] * (L + 1)
        # The ends hold the embedding and the head; a middle stage holds neither. Every
        # other stage keeps at least one layer.
        for k in range(1, L - last + 1):
            start = 0 if i == 0 else (L - k if i == last else 1)
            r = LayerRange(start, start + k)
            if perf.kv_tokens(n, r) < perf.mem.reserve_tokens:
                break  # more layers fit even less
            row[k] = perf.range_rate(n, r, perf.resident_seqs(n, r)) / k
        out.append(row)
    return out


def ceilings(rates: list[list[float]], tau: float) -> list[int]:
    """Most layers each stage may hold and still carry `tau` tokens/s."""
    return [max((k for k in range(1, len(row)) if row[k] >= tau), default=0) for row in rates]


def cut_under(
    counts: Sequence[int], caps: Sequence[int], loop_cost: Sequence[float], total: int
) -> list[int] | None:
    """The original counts clamped to `caps`, the shortfall handed to the stages with
    room that cost a token least time per layer. None when the caps cannot cover."""
    got = [min(c, cap) for c, cap in zip(counts, caps, strict=True)]
    if any(c < 1 for c in got) or sum(caps) < total:
        return None
    order = sorted(range(len(got)), key=lambda i: (loop_cost[i], i))
    short = total - sum(got)
    for i in order:
        if short <= 0:
            break
        add = min(short, caps[i] - got[i])
        got[i] += add
        short -= add
    return got if short == 0 else None


def layout(pipe: Pipeline, counts: Sequence[int]) -> Pipeline:
    out, at = [], 0
    for (n, _r), c in zip(pipe, counts, strict=True):
        out.append((n, LayerRange(at, at + c)))
        at += c
    return out


def saturation_rate(rates: list[list[float]], counts: Sequence[int]) -> float:
    return min(row[c] for row, c in zip(rates, counts, strict=True))


def rebalance(
    pipe: Pipeline, perf: PerfModel, est: Estimate | None = None
) -> tuple[Pipeline, Estimate]:
    """The pipeline re-cut for the highest saturation rate the estimate allows; the
    pipeline itself when it is not a plain partition or nothing better exists."""
    L = perf.num_layers
    base = est if est is not None else group_estimate(pipe, perf)
    if len(pipe) < 2 or not is_partition(pipe, L) or base.throughput_tok_s <= 0:
        return pipe, base
    nodes = [n for n, _r in pipe]
    counts = [len(r) for _n, r in pipe]
    rates = stage_rates(perf, nodes)
    lo = saturation_rate(rates, counts)
    hi = max(max(row) for row in rates)
    loop_cost = [perf.layer_s(n, 1.0) for n in nodes]
    floor = (1.0 - ESTIMATE_SLACK) * base.throughput_tok_s
    target = perf.options.latency_target_ms or math.inf
    best: tuple[Pipeline, Estimate] = (pipe, base)
    best_rate = lo
    for _ in range(STEPS):
        tau = (lo + hi) / 2
        got = cut_under(counts, ceilings(rates, tau), loop_cost, L)
        if got is None:
            hi = tau
            continue
        cand = layout(pipe, got)
        cand_est = group_estimate(cand, perf)
        if cand_est.throughput_tok_s >= floor and cand_est.latency_ms_per_token <= target:
            lo = tau
            if saturation_rate(rates, got) > best_rate:
                best, best_rate = (cand, cand_est), saturation_rate(rates, got)
        else:
            hi = tau
    return best
