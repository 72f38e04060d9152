"""What stands before a Join: single-use challenges, and a limit on failures per peer.

`Challenges` hands out nonces that a node answers with an HMAC under the join
token (parallax/rpc/auth.py), so the token is never sent. `FailureLimiter` is a
leaky bucket per peer host: a few failed joins are forgiven, more lock the peer
out for a while, so a weak token cannot be guessed at wire speed. Neither does
I/O or reads a clock: every method takes `now` (seconds).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from parallax.rpc.auth import new_nonce

CHALLENGE_TTL_S = 30.0
MAX_CHALLENGES = 4096  # outstanding; the oldest are dropped past it
MAX_PEERS = 10_000  # peers with failures remembered; the calmest are forgotten past it


class Challenges:
    def __init__(self, ttl_s: float = CHALLENGE_TTL_S, capacity: int = MAX_CHALLENGES) -> None:
        self.ttl_s = ttl_s
        self.capacity = capacity
        self._open: OrderedDict[bytes, float] = OrderedDict()  # nonce -> expiry

    def issue(self, now: float) -> bytes:
        self._drop_expired(now)
        while len(self._open) >= self.capacity:
            self._open.popitem(last=False)
        nonce = new_nonce()
        self._open[nonce] = now + self.ttl_s
        return nonce

    def take(self, nonce: bytes, now: float) -> bool:
        """True once per issued, unexpired nonce: a proof cannot be replayed."""
        expiry = self._open.pop(nonce, None)
        return expiry is not None and now <= expiry

    def _drop_expired(self, now: float) -> None:
        while self._open:
            nonce, expiry = next(iter(self._open.items()))
            if expiry >= now:
                return
            del self._open[nonce]


@dataclass
class _Bucket:
    level: float  # failures not yet forgiven
    at: float  # when `level` was last computed


class FailureLimiter:
    """`burst` failures are allowed at once; one is forgiven every `forgive_s` seconds."""

    def __init__(self, burst: int = 5, forgive_s: float = 12.0) -> None:
        self.burst = burst
        self.forgive_s = forgive_s
        self._peers: dict[str, _Bucket] = {}

    def retry_after(self, peer: str, now: float) -> float:
        """0 when `peer` may try now, else the seconds until it may."""
        level = self._level(peer, now)
        if level + 1 <= self.burst:
            return 0.0
        return (level + 1 - self.burst) * self.forgive_s

    def fail(self, peer: str, now: float) -> None:
        if peer not in self._peers and len(self._peers) >= MAX_PEERS:
            calmest = min(self._peers, key=lambda p: self._level(p, now))
            del self._peers[calmest]
        self._peers[peer] = _Bucket(self._level(peer, now) + 1, now)

    def _level(self, peer: str, now: float) -> float:
        b = self._peers.get(peer)
        if b is None:
            return 0.0
        return max(0.0, b.level - max(0.0, now - b.at) / self.forgive_s)


def peer_host(peer: str) -> str:
    """The host of a gRPC peer string (`ipv4:1.2.3.4:5678`, `ipv6:[::1]:5678`): failures
    count per machine, not per connection, which a client can open at will."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer
    host = rest.rpartition(":")[0] or rest
    return host.strip("[]")


def retry_text(seconds: float) -> str:
    return f"{math.ceil(seconds)} s"
