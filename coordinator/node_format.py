"""A joining node's `ModelFormat`, checked: nodes are strangers, and a node that
understates its bytes per layer would be handed more layers than it can hold."""

from __future__ import annotations

from parallax.errors import InvalidArgument
from parallax.models.footprint import Footprint, footprint, implausible
from parallax.models.spec import ModelSpec
from parallax.rpc import parallax_pb2 as pb


def footprint_from_pb(request: pb.JoinRequest, spec: ModelSpec) -> Footprint | None:
    """The node's footprint for the scheduler: None from a node that sent no format
    (planned with the cluster-wide dtype), the formula's for its format when it sent
    no bytes, else its own bytes once they are within a plausible factor of the
    formula. InvalidArgument, saying why, otherwise."""
    if not request.HasField("format"):
        return None
    msg = request.format
    sizes = (msg.layer_bytes, msg.kv_bytes_per_token, msg.embedding_bytes, msg.head_bytes)
    if not any(sizes):
        return footprint(spec, msg.dtype, msg.weights)
    reported = Footprint(*sizes, dtype=msg.dtype, weights=msg.weights)
    why = implausible(spec, reported)
    if why:
        raise InvalidArgument(f"join refused: {why}")
    return reported
