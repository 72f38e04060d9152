"""What the gateway does when a chain fails a request: a pure decision from the
failure's kind and what this request has used so far.

- The chain is healthy but full (`kv_full`, `overloaded`): wait a moment, then any
  chain, the same one included. Bounded by `capacity_retries`, not by `max_replays`.
- A hop is gone or moved (`unreachable`, `reassigned`, `draining`, `internal`) or
  went silent (`stalled`): another chain; when none shows up in time, the same
  chain once per request, if the router still offers it (its nodes heartbeat).
- The request itself is bad (`invalid`) or was ended on purpose (`cancelled`): never.
"""

from __future__ import annotations

from dataclasses import dataclass

from parallax.failures import FailureKind

# After a hop ran out of KV (or its queues filled), wait this long for others to finish.
CAPACITY_BACKOFF_S = 1.0
# How long to look for another chain after a stall or a hop that moved or is leaving
# (the registry sees those at once), before taking the same chain as a last resort.
MOVED_REROUTE_WAIT_S = 5.0

_CAPACITY = frozenset({FailureKind.KV_FULL, FailureKind.OVERLOADED})
_FINAL = frozenset({FailureKind.INVALID, FailureKind.CANCELLED})
# A dead node is noticed only after the coordinator's dead-after time: wait longer.
_GONE = frozenset({FailureKind.UNREACHABLE, FailureKind.INTERNAL})


@dataclass(frozen=True)
class Budget:
    max_replays: int  # replays after faults (a hop gone, moved or silent)
    capacity_retries: int  # replays after a full chain
    replay_wait_s: float  # longest wait for another chain after a hop died


@dataclass(frozen=True)
class Used:
    replays: int = 0
    capacity_retries: int = 0
    same_chain_fallback: bool = False  # the same chain was taken once as a last resort


@dataclass(frozen=True)
class Replay:
    backoff_s: float  # sleep this long first
    any_chain: bool  # the same chain is as good as another
    wait_s: float  # look this long for another chain
    same_at_last: bool  # then take the same chain, if the router still offers it
    used: Used  # the request's counts once this replay is made


def plan_replay(kind: FailureKind, used: Used, budget: Budget) -> Replay | None:
    """The replay to make after a failure of `kind`, or None: the request fails."""
    if kind in _FINAL:
        return None
    if kind in _CAPACITY:
        if used.capacity_retries >= budget.capacity_retries:
            return None
        after = Used(used.replays, used.capacity_retries + 1, used.same_chain_fallback)
        return Replay(CAPACITY_BACKOFF_S, True, 0.0, False, after)
    if used.replays >= budget.max_replays:
        return None
    wait = (
        budget.replay_wait_s if kind in _GONE else min(MOVED_REROUTE_WAIT_S, budget.replay_wait_s)
    )
    fallback = not used.same_chain_fallback
    after = Used(used.replays + 1, used.capacity_retries, used.same_chain_fallback)
    return Replay(0.0, False, wait, fallback, after)
