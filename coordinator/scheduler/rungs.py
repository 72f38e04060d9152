"""The KV ladder: how much KV room per node a layout plans for, searched by rungs.

Few resident sequences leave room for more layers per node (fewer hops); many keep the
decode batch large. The heuristic's layouts and packings are scored on a geometric
ladder of targets and the best rung refined once.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from coordinator.scheduler.perf import PerfModel


def seq_targets(perf: PerfModel, ratio: float = 2.0) -> list[float]:
    """Resident sequences per node to plan KV room for: a geometric ladder up to the
    engine's --max-running. Few sequences leave room for more layers per node (fewer
    hops); many keep the batch large. The estimate picks the best rung."""
    top = float(perf.options.max_running_per_node)
    out, s = [], 1.0
    while s < top:
        out.append(s)
        s *= ratio
    return [*out, top]


def best_rung(score: Callable[[float], float], perf: PerfModel) -> dict[float, float]:
    """Walk the KV ladder upwards, then try the rungs halfway around the best: the
    estimate rises while more KV buys batch and falls once it costs stages, so a
    coarse ladder and one refinement find the top. `score` returns -inf when a rung
    does not fit, and every higher rung fits even less."""
    rungs = seq_targets(perf)
    got: dict[float, float] = {}
    for s in rungs:
        got[s] = score(s)
        if got[s] == -math.inf:
            break
    best = max(got, key=lambda s: (got[s], -s))
    for s in (best / math.sqrt(2), best * math.sqrt(2)):
        if 1.0 <= s <= rungs[-1] and s not in got:
            got[s] = score(s)
    return got
