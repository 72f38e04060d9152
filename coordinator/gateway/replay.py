"""What the gateway does when a chain fails a request: a pure decision from the
failure's kind and what this request has used so far.

- The chain is healthy but full (`kv_full`, `overloaded`): wait a moment, then any
  chain, the same one included. Bounded by `capacity_retries`.
- The cluster moved under it (`reassigned`, `draining`): the coordinator is
  re-covering those layers, so wait (up to `replay_wait_s`) for any current chain.
  That is the cluster's doing, not the request's: bounded by `max_moves`, generously.
- A hop failed (`unreachable`, `internal`) or went silent (`stalled`): another chain
  (a dead node is noticed only after the coordinator's dead-after time); when none
  shows up in time, the same chain once per request, if the router still offers it
  (its nodes heartbeat). Bounded by `max_replays`.
- The request itself is bad (`invalid`) or was ended on purpose (`cancelled`): never.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from parallax.failures import FailureKind

# After a hop ran out of KV (or its queues filled), wait this long for others to finish.
CAPACITY_BACKOFF_S = 1.0
# How long to look for another chain after a stall (the silent chain's nodes still
# heartbeat), before taking the same chain as a last resort.
STALL_REROUTE_WAIT_S = 5.0
# After a hop moved, the router's cached state may still offer it for a moment.
MOVED_BACKOFF_S = 0.25

_CAPACITY = frozenset({FailureKind.KV_FULL, FailureKind.OVERLOADED})
_MOVED = frozenset({FailureKind.REASSIGNED, FailureKind.DRAINING})
_FINAL = frozenset({FailureKind.INVALID, FailureKind.CANCELLED})


@dataclass(frozen=True)
class Budget:
    max_replays: int  # replays after faults (a hop failed or went silent)
    capacity_retries: int  # replays after a full chain
    replay_wait_s: float  # longest wait for another chain
    max_moves: int = 8  # replays after the cluster moved (reassigned or draining hops)


@dataclass(frozen=True)
class Used:
    replays: int = 0
    capacity_retries: int = 0
    same_chain_fallback: bool = False  # the same chain was taken once as a last resort
    moves: int = 0


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
        after = replace(used, capacity_retries=used.capacity_retries + 1)
        return Replay(CAPACITY_BACKOFF_S, True, 0.0, False, after)
    if kind in _MOVED:
        if used.moves >= budget.max_moves:
            return None
        after = replace(used, moves=used.moves + 1)
        # A moved node is not routable until it holds its new range, so after a moment
        # any chain the router offers is current: wait for one while layers reload.
        return Replay(MOVED_BACKOFF_S, True, budget.replay_wait_s, False, after)
    if used.replays >= budget.max_replays:
        return None
    wait = budget.replay_wait_s
    if kind is FailureKind.STALLED:
        wait = min(STALL_REROUTE_WAIT_S, wait)
    after = replace(used, replays=used.replays + 1)
    return Replay(0.0, False, wait, not used.same_chain_fallback, after)
