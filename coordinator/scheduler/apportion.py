"""Apportion a run of layers over an ordered list of nodes: water-filling with caps.

The one arithmetic under every layout: `fast` (by speed), `simple` (by memory), the
gap repair in `mend`, and the simulator's baselines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def water_fill(total: int, weights: Sequence[float], caps: Sequence[int]) -> list[int] | None:
    """Integer counts, each in [1, cap], summing to `total`, as close to proportional
    to `weights` as the caps allow. None when the caps cannot reach `total`, or when
    `total` is smaller than the number of parts (every part needs one layer).

    Proportional to weight, clamped at cap, the rest re-shared among the unclamped:
    the classic water level. Rounding goes by largest remainder so the result is
    deterministic and sums exactly.
    """
    n = len(weights)
    if n == 0 or total < n or sum(caps) < total or any(c < 1 for c in caps):
        return None
    w = [max(float(x), 1e-12) for x in weights]
    share = [0.0] * n
    free = set(range(n))
    left = float(total)
    # Clamp the parts whose proportional share exceeds their cap, then re-share the rest.
    while free:
        wsum = sum(w[i] for i in free)
        over = [i for i in free if left * w[i] / wsum > caps[i]]
        if not over:
            for i in free:
                share[i] = left * w[i] / wsum
            break
        for i in over:
            share[i] = float(caps[i])
            left -= caps[i]
            free.discard(i)
    counts = [min(caps[i], max(1, math.floor(share[i]))) for i in range(n)]
    diff = total - sum(counts)
    # Hand out (or take back) single layers by remainder, respecting [1, cap].
    order = sorted(range(n), key=lambda i: (-(share[i] - math.floor(share[i])), i))
    while diff > 0:
        moved = False
        for i in order:
            if diff and counts[i] < caps[i]:
                counts[i] += 1
                diff -= 1
                moved = True
        if not moved:
            return None
    while diff < 0:
        moved = False
        for i in reversed(order):
            if diff and counts[i] > 1:
                counts[i] -= 1
                diff += 1
                moved = True
        if not moved:
            return None
    return counts


def balance(
    total: int, per_layer: Sequence[float], fixed: Sequence[float], caps: Sequence[int]
) -> list[int] | None:
    """Integer counts in [1, cap] summing to `total` that minimise the slowest part's
    time, `fixed[i] + counts[i] * per_layer[i]` (a pipeline's stage times; `fixed` is
    work a stage has whatever its layers, such as the head on the last one). None when
    the caps cannot reach `total`. Bisection on the stage time, then the surplus comes
    off the slowest stages: exact up to the bisection's tolerance."""
    n = len(per_layer)
    if n == 0 or total < n or sum(caps) < total or any(c < 1 for c in caps):
        return None
    unit = [max(float(x), 1e-15) for x in per_layer]

    def fit(tau: float) -> list[int]:
        return [
            max(0, min(caps[i], math.floor((tau - fixed[i]) / unit[i] + 1e-9))) for i in range(n)
        ]

    lo = max(fixed[i] + unit[i] for i in range(n))
    hi = max(fixed[i] + caps[i] * unit[i] for i in range(n))
    if sum(fit(lo)) < total:
        # To a thousandth of the stage time: finer only reshuffles single layers, which
        # the surplus pass below settles anyway.
        while hi - lo > 1e-3 * hi:
            mid = (lo + hi) / 2
            if sum(fit(mid)) >= total:
                hi = mid
            else:
                lo = mid
        lo = hi
    counts = fit(lo)
    if any(c < 1 for c in counts):
        return None
    while sum(counts) > total:
        i = max(
            (j for j in range(n) if counts[j] > 1),
            key=lambda j: (fixed[j] + counts[j] * unit[j], j),
        )
        counts[i] -= 1
    return counts


def bounds(counts: Sequence[int], start: int = 0) -> list[tuple[int, int]]:
    """Consecutive half-open (start, end) pairs from a list of counts."""
    out, at = [], start
    for c in counts:
        out.append((at, at + c))
        at += c
    return out
