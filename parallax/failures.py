"""Why a request failed, as a kind, not a string: nodes send it on the wire
(`TokenEvent.failure`) and the gateway decides from it whether and where to replay.
"""

from __future__ import annotations

from enum import StrEnum

from parallax.errors import CapacityError, InvalidArgument, Overloaded, StaleRoute
from parallax.rpc import parallax_pb2 as pb


class FailureKind(StrEnum):
    KV_FULL = "kv_full"  # a hop ran out of KV cache: the chain is healthy, retry later
    OVERLOADED = "overloaded"  # a hop's queues are full: retry later, anywhere
    UNREACHABLE = "unreachable"  # a hop could not be reached or refused a message
    REASSIGNED = "reassigned"  # a hop no longer serves the layers (stale route)
    DRAINING = "draining"  # a hop is leaving and takes no new requests
    INVALID = "invalid"  # the request itself is bad: no chain can run it
    INTERNAL = "internal"  # a bug on a node, or non-finite logits
    # Gateway-side only, never on the wire:
    STALLED = "stalled"  # no token from the chain for the stall time
    CANCELLED = "cancelled"  # the client left or a stop string ended the request

    def to_wire(self) -> int:
        return pb.Failure.Value(f"FAILURE_{self.name}")

    @classmethod
    def from_wire(cls, value: int) -> FailureKind | None:
        """None for FAILURE_NONE; an unknown value (a newer peer) counts as internal."""
        if value == pb.FAILURE_NONE:
            return None
        try:
            return cls[pb.Failure.Name(value).removeprefix("FAILURE_")]
        except (KeyError, ValueError):
            return cls.INTERNAL

    @classmethod
    def of(cls, error: BaseException) -> FailureKind:
        """The kind of a typed error raised while handling a request."""
        if isinstance(error, Overloaded):
            return cls.OVERLOADED
        if isinstance(error, CapacityError):
            return cls.KV_FULL
        if isinstance(error, StaleRoute):
            return cls.REASSIGNED
        if isinstance(error, InvalidArgument):
            return cls.INVALID
        return cls.INTERNAL


def failure_event(rid: str, kind: FailureKind, why: str, hop: str = "") -> pb.TokenEvent:
    """The last event of a request that failed: finished, no token, a kind and a reason
    (and for `unreachable`, the address of the hop that could not be reached)."""
    return pb.TokenEvent(
        request_id=rid, finished=True, failure=kind.to_wire(), error=why, unreachable_hop=hop
    )
