"""What RPC handlers queue for the node loop: one small typed message per RPC.

Only the loop touches the pipeline (a step runs in a worker thread), so handlers
validate, queue one of these and return. Each message applies itself to the
pipeline and knows which requests it concerns, so a message that cannot be applied
is answered for exactly those requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from node.outbox import Outbox
from parallax.failures import FailureKind
from parallax.rpc import parallax_pb2 as pb

if TYPE_CHECKING:
    from node.pipeline import NodePipeline


class InboxMessage(Protocol):
    op: str

    def apply(self, pipe: NodePipeline, out: Outbox) -> None: ...

    def request_ids(self) -> list[str]: ...

    def carried(self) -> list[pb.SubmitRequest]:
        """Requests this message would start: answered if it cannot be applied."""
        ...


@dataclass(frozen=True)
class Submit:
    request: pb.SubmitRequest
    op: str = "submit"

    def apply(self, pipe: NodePipeline, out: Outbox) -> None:
        pipe.submit(self.request)

    def request_ids(self) -> list[str]:
        return [self.request.request_id]

    def carried(self) -> list[pb.SubmitRequest]:
        return [self.request]


@dataclass(frozen=True)
class Forward:
    message: pb.ForwardRequest
    hidden: torch.Tensor
    op: str = "forward"

    def apply(self, pipe: NodePipeline, out: Outbox) -> None:
        pipe.enqueue(self.message, self.hidden, out)

    def request_ids(self) -> list[str]:
        return list(dict.fromkeys(c.request_id for c in self.message.chunks))

    def carried(self) -> list[pb.SubmitRequest]:
        return [c.request for c in self.message.chunks if c.HasField("request")]


@dataclass(frozen=True)
class Tokens:
    batch: pb.TokenBatch
    op: str = "tokens"

    def apply(self, pipe: NodePipeline, out: Outbox) -> None:
        pipe.on_tokens(self.batch)

    def request_ids(self) -> list[str]:
        return list(dict.fromkeys(e.request_id for e in self.batch.events))

    def carried(self) -> list[pb.SubmitRequest]:
        return []


@dataclass(frozen=True)
class Release:
    message: pb.ReleaseRequest
    op: str = "release"

    def apply(self, pipe: NodePipeline, out: Outbox) -> None:
        signatures = self.message.grant_signatures
        kv_only = self.message.kv_only
        freeable = pipe.granted(list(kv_only), signatures, tombstone=False)
        pipe.free_kv({rid: kv_only[rid] for rid in freeable})
        pipe.release(pipe.granted(list(self.message.request_ids), signatures))

    def request_ids(self) -> list[str]:
        return []  # it only frees: nothing to answer if it fails

    def carried(self) -> list[pb.SubmitRequest]:
        return []


@dataclass(frozen=True)
class Lost:
    """A message to a peer was lost (the peer is unreachable or refused it): the
    requests it carried cannot go on on this chain."""

    rids: tuple[str, ...]
    why: str
    address: str = ""  # the peer that could not be reached
    op: str = "lost"

    def apply(self, pipe: NodePipeline, out: Outbox) -> None:
        for rid in self.rids:
            if rid in pipe.reqs:
                pipe.fail(rid, FailureKind.UNREACHABLE, self.why, out, hop=self.address)

    def request_ids(self) -> list[str]:
        return list(self.rids)

    def carried(self) -> list[pb.SubmitRequest]:
        return []


def request_ids_of(message: object) -> tuple[str, ...]:
    """The requests an outbound message concerns (a Release names requests only to
    free them, so losing one loses no request)."""
    if isinstance(message, pb.SubmitRequest):
        return (message.request_id,)
    if isinstance(message, pb.ForwardRequest):
        return tuple(dict.fromkeys(c.request_id for c in message.chunks))
    if isinstance(message, pb.TokenBatch):
        return tuple(dict.fromkeys(e.request_id for e in message.events))
    return ()
