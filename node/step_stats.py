"""What a node measures of its own steps and reports in heartbeats: the per-layer step
time (the scheduler calibrates its performance model with it) and tokens per second."""

from __future__ import annotations

import time
from collections import deque

WINDOW_S = 5.0  # tokens/s is counted over this many seconds


class StepStats:
    def __init__(self) -> None:
        self.layer_ms = 0.0  # exponential moving average of a step's time per layer
        self.tokens_per_s = 0.0
        self._window: deque[tuple[float, int]] = deque()

    def on_step(self, seconds: float, layers: int, tokens: int) -> None:
        """A step that did work: `seconds` over `layers` layers, `tokens` rows out."""
        per_layer = seconds * 1000 / max(1, layers)
        self.layer_ms = per_layer if not self.layer_ms else 0.9 * self.layer_ms + 0.1 * per_layer
        now = time.monotonic()
        self._window.append((now, tokens))
        while self._window and now - self._window[0][0] > WINDOW_S:
            self._window.popleft()
        span = max(1.0, now - self._window[0][0])
        self.tokens_per_s = sum(k for _, k in self._window) / span
