"""Serving metrics from per-request outcomes, defined as vLLM's benchmark_serving does.

- TTFT: request sent -> first content chunk.
- TPOT: (latency - TTFT) / (output tokens - 1), per request, so the first token is excluded.
- ITL: the gaps between consecutive content chunks, pooled over every request.
- E2EL: request sent -> last byte of the stream.
- Goodput: completed requests that meet every `--goodput` SLO, per second.
Failed requests count in no latency figure, but are counted and broken down by status.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MS = 1000.0
PERCENTILES = (90, 99)


@dataclass(frozen=True)
class RequestOutcome:
    """What one request did. Times are in seconds from when it was sent."""

    ok: bool
    prompt_len: int  # tokens, as the dataset counted them
    output_len: int = 0  # tokens: the server's usage, else the content chunks
    ttft_s: float = 0.0
    itl_s: tuple[float, ...] = ()
    latency_s: float = 0.0
    status: str = "200"  # HTTP status, "stream_error" (error event after the 200) or "transport"
    retry_after_s: float | None = None  # a 429's Retry-After header
    error: str = ""

    @property
    def tpot_s(self) -> float:
        """0 for a one-token answer, as vLLM counts it (it then meets any TPOT SLO)."""
        if self.output_len <= 1:
            return 0.0
        return (self.latency_s - self.ttft_s) / (self.output_len - 1)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary_ms(name: str, values_s: Sequence[float]) -> dict[str, float]:
    """mean/median/std/pNN of one metric in milliseconds, keyed as vLLM's JSON is."""
    ms = [v * MS for v in values_s]
    out = {
        f"mean_{name}_ms": statistics.fmean(ms) if ms else 0.0,
        f"median_{name}_ms": statistics.median(ms) if ms else 0.0,
        f"std_{name}_ms": statistics.pstdev(ms) if ms else 0.0,
    }
    for q in PERCENTILES:
        out[f"p{q}_{name}_ms"] = percentile(ms, q)
    return out


def is_good(outcome: RequestOutcome, slos_ms: dict[str, float]) -> bool:
    measured = {
        "ttft": outcome.ttft_s * MS,
        "tpot": outcome.tpot_s * MS,
        "e2el": outcome.latency_s * MS,
    }
    return outcome.ok and all(measured[key] <= limit for key, limit in slos_ms.items())


def compute_metrics(
    outcomes: Sequence[RequestOutcome], duration_s: float, slos_ms: dict[str, float]
) -> dict[str, Any]:
    done = [o for o in outcomes if o.ok]
    failed = [o for o in outcomes if not o.ok]
    total_in = sum(o.prompt_len for o in done)
    total_out = sum(o.output_len for o in done)
    per_s = 1.0 / duration_s if duration_s > 0 else 0.0
    retry_after = sorted({o.retry_after_s for o in failed if o.retry_after_s is not None})
    result: dict[str, Any] = {
        "duration": duration_s,
        "completed": len(done),
        "failed": len(failed),
        "failures_by_status": dict(sorted(Counter(o.status for o in failed).items())),
        "retry_after_s": retry_after,
        "error_samples": sorted({o.error for o in failed if o.error})[:5],
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": len(done) * per_s,
        "request_goodput": (sum(is_good(o, slos_ms) for o in done) * per_s if slos_ms else None),
        "output_throughput": total_out * per_s,
        "total_token_throughput": (total_in + total_out) * per_s,
    }
    result |= summary_ms("ttft", [o.ttft_s for o in done])
    result |= summary_ms("tpot", [o.tpot_s for o in done if o.output_len > 1])
    result |= summary_ms("itl", [gap for o in done for gap in o.itl_s])
    result |= summary_ms("e2el", [o.latency_s for o in done])
    return result
