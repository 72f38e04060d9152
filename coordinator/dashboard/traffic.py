"""Live request figures for the dashboard: rates, latency percentiles, active routes.

A plain in-memory tracker with no I/O and no clock of its own: every method takes
`now` (seconds). It holds only ids, counts and timings, never prompt text, so
what it shows cannot leak a prompt.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from coordinator.scheduler.types import Route

WINDOW_S = 300  # the chart's span: the last five minutes, one bucket per second
MAX_SAMPLES = 4096  # latency samples kept for percentiles, newest first out last


@dataclass(frozen=True)
class RouteHop:
    node_id: str
    start: int
    end: int


@dataclass
class _Active:
    started: float
    route: tuple[RouteHop, ...] = ()
    tokens: int = 0
    first_token_at: float | None = None
    last_token_at: float | None = None


@dataclass
class _Samples:
    """Timestamped samples of the last WINDOW_S seconds, at most MAX_SAMPLES."""

    items: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))

    def add(self, now: float, value: float) -> None:
        self.items.append((now, value))

    def percentiles(self, now: float, qs: tuple[float, ...]) -> dict[str, float | None]:
        while self.items and now - self.items[0][0] > WINDOW_S:
            self.items.popleft()
        values = sorted(v for _, v in self.items)
        return {f"p{round(q * 100)}": _quantile(values, q) for q in qs}


def _quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile of sorted values; None when there are none."""
    if not values:
        return None
    rank = max(1, math.ceil(q * len(values)))
    return values[rank - 1]


def route_hops(route: Route) -> tuple[RouteHop, ...]:
    return tuple(RouteHop(h.node_id, h.range.start, h.range.end) for h in route.hops)


class Traffic:
    """Thread-safe: requests are observed on the event loop, snapshots may be read anywhere."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[str, _Active] = {}
        # Per-second buckets: second -> [requests started, tokens generated].
        self._buckets: dict[int, list[int]] = {}
        self._ttft = _Samples()
        self._itl = _Samples()
        # How requests ended: finished (stop, length), cancelled (abort), failed (error).
        self._ended = {"finished": 0, "cancelled": 0, "failed": 0}

    # ---- observations ----
    def started(self, request_id: str, now: float) -> None:
        with self._lock:
            self._active[request_id] = _Active(started=now)
            self._bucket(now)[0] += 1

    def routed(self, request_id: str, route: Route) -> None:
        with self._lock:
            active = self._active.get(request_id)
            if active is not None:
                active.route = route_hops(route)

    def token(self, request_id: str, now: float) -> None:
        with self._lock:
            active = self._active.get(request_id)
            if active is None:
                return
            if active.first_token_at is None:
                active.first_token_at = now
                self._ttft.add(now, now - active.started)
            else:
                self._itl.add(now, now - (active.last_token_at or now))
            active.last_token_at = now
            active.tokens += 1
            self._bucket(now)[1] += 1

    def ended(self, request_id: str, outcome: str) -> None:
        """`outcome`: a finish reason, or "rejected" when the request never started."""
        with self._lock:
            if self._active.pop(request_id, None) is None:
                return
            if outcome in ("stop", "length"):
                self._ended["finished"] += 1
            elif outcome == "abort":
                self._ended["cancelled"] += 1
            else:
                self._ended["failed"] += 1

    def _bucket(self, now: float) -> list[int]:
        second = int(now)
        bucket = self._buckets.get(second)
        if bucket is None:
            bucket = self._buckets[second] = [0, 0]
            for old in [s for s in self._buckets if s <= second - WINDOW_S]:
                del self._buckets[old]
        return bucket

    # ---- views ----
    @property
    def active_count(self) -> int:
        with self._lock:
            return len(self._active)

    def snapshot(self, now: float) -> dict[str, Any]:
        """JSON-ready figures: per-second series (oldest first), percentiles, active routes."""
        with self._lock:
            last = int(now) - 1  # the current second is still filling: leave it out
            seconds = range(last - WINDOW_S + 1, last + 1)
            requests = [self._buckets.get(s, (0, 0))[0] for s in seconds]
            tokens = [self._buckets.get(s, (0, 0))[1] for s in seconds]
            active = [
                {
                    "request_id": rid,
                    "age_s": round(now - a.started, 3),
                    "tokens": a.tokens,
                    "route": [{"node_id": h.node_id, "range": [h.start, h.end]} for h in a.route],
                }
                for rid, a in sorted(self._active.items(), key=lambda kv: kv[1].started)
            ]
            qs = (0.5, 0.99)
            recent = slice(-60, None)  # "now" rates: the last minute
            return {
                "window_s": WINDOW_S,
                "series": {"end": last, "requests": requests, "tokens": tokens},
                "requests_per_s": round(sum(requests[recent]) / 60, 3),
                "tokens_per_s": round(sum(tokens[recent]) / 60, 3),
                "ttft_s": self._ttft.percentiles(now, qs),
                "inter_token_s": self._itl.percentiles(now, qs),
                "active": active,
                "ended": dict(self._ended),
            }
