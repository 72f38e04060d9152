"""When each request is sent: gamma-distributed gaps, as vLLM's benchmark_serving draws them.

With shape k = burstiness and scale 1/(rate*k), the gaps average 1/rate whatever k is;
k = 1 is a Poisson process, k < 1 burstier, k > 1 more even.
"""

from __future__ import annotations

import math
import random


def send_offsets(n: int, rate: float, burstiness: float, rng: random.Random) -> list[float]:
    """Seconds from the start at which each of n requests is sent; the first at 0.

    rate = inf sends all of them at once.
    """
    if n <= 0:
        return []
    if math.isinf(rate):
        return [0.0] * n
    scale = 1.0 / (rate * burstiness)
    offsets = [0.0]
    for _ in range(n - 1):
        offsets.append(offsets[-1] + rng.gammavariate(burstiness, scale))
    return offsets
