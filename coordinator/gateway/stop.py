"""Stop strings matched on detokenized text, across token boundaries.

While streaming, text that could be the beginning of a stop string is held
back until it is known not to be one, so a client never sees part of a stop.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StopCheck:
    text: str  # safe to emit now
    stopped: bool  # a stop string matched; `text` ends right before it


class StopMatcher:
    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self._done = False

    @property
    def has_stops(self) -> bool:
        return bool(self._stops)

    def feed(self, text: str) -> StopCheck:
        if self._done:
            return StopCheck("", True)
        if not self._stops:
            return StopCheck(text, False)
        buf = self._held + text
        # Everything before `self._held` was released only because no stop could
        # start there, so the earliest match is always inside `buf`.
        hits = [i for i in (buf.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._done = True
            self._held = ""
            return StopCheck(buf[: min(hits)], True)
        keep = self._partial_suffix(buf)
        self._held = buf[len(buf) - keep :]
        return StopCheck(buf[: len(buf) - keep], False)

    def flush(self) -> str:
        """The held-back text, once generation ended without a stop string."""
        out, self._held = self._held, ""
        return "" if self._done else out

    def _partial_suffix(self, buf: str) -> int:
        """Length of the longest suffix of `buf` that is a proper prefix of a stop string."""
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(buf)), best, -1):
                if buf.endswith(stop[:n]):
                    best = n
                    break
        return best
