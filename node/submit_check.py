"""What a node checks before it takes a request: pure, so the Submit RPC can refuse bad
input with INVALID_ARGUMENT at once instead of failing the request later."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from parallax.errors import InvalidArgument, StaleRoute
from parallax.rpc import parallax_pb2 as pb
from parallax.sampling import SamplingParams
from parallax.types import LayerRange, is_host_port


class HopLike(Protocol):
    node_id: str
    address: str
    start: int
    end: int


def check_route(hops: Sequence[HopLike], num_layers: int) -> None:
    """A route is hops that each name a node and its address and that cover the layers
    [0, num_layers) in order, each exactly once."""
    if not hops:
        raise InvalidArgument("the route has no hops")
    reach = 0
    for i, h in enumerate(hops):
        if not h.node_id or not is_host_port(h.address):
            raise InvalidArgument(f"route hop {i} needs a node_id and a HOST:PORT address")
        if h.start != reach or not h.start < h.end <= num_layers:
            raise InvalidArgument(
                f"route hop {i} covers [{h.start}, {h.end}); a route's hops must cover the "
                f"layers [0, {num_layers}) in order, each hop starting where the last ended"
            )
        reach = h.end
    if reach != num_layers:
        raise InvalidArgument(f"the route ends at layer {reach}, not at {num_layers}")


def check_request(
    request: pb.SubmitRequest, *, num_layers: int, vocab_size: int, max_context: int
) -> None:
    """What every hop checks of a request it takes (a Submit, or the request a Forward's
    first chunk carries): nothing in it may fail a step that other requests share."""
    if not request.request_id or not is_host_port(request.reply_to):
        raise InvalidArgument("a request needs a request_id and a HOST:PORT reply_to address")
    SamplingParams.from_proto(request.sampling).check_vocab(vocab_size)
    ids = request.prompt_ids
    if not ids or any(not 0 <= t < vocab_size for t in ids):
        raise InvalidArgument("the prompt is empty or has a token id outside the vocabulary")
    if len(ids) >= max_context:
        raise InvalidArgument(f"the prompt has {len(ids)} tokens; context is {max_context}")
    if not 0 <= request.generated_offset <= len(ids):
        raise InvalidArgument(f"generated_offset {request.generated_offset} is not in the prompt")
    check_route(request.route.hops, num_layers)


def check_hop(request: pb.SubmitRequest, *, node_id: str, held: LayerRange) -> int:
    """This node's place in the request's route; StaleRoute when the route does not name
    it or names layers it no longer holds (it moved since the route was chosen)."""
    hops = request.route.hops
    idx = next((i for i, h in enumerate(hops) if h.node_id == node_id), None)
    if idx is None:
        raise StaleRoute(f"request {request.request_id}: this node is not on its route")
    hop = hops[idx]
    if not held.covers(LayerRange(hop.start, hop.end)):
        raise StaleRoute(
            f"request {request.request_id}: hop [{hop.start}, {hop.end}) is outside this "
            f"node's layers {held}; the route is stale"
        )
    return idx


def check_submit(
    request: pb.SubmitRequest,
    *,
    node_id: str,
    held: LayerRange,
    num_layers: int,
    vocab_size: int,
    max_context: int,
) -> None:
    """Raise InvalidArgument (or StaleRoute), saying what is wrong, unless this node can
    start `request` as its first hop."""
    check_request(request, num_layers=num_layers, vocab_size=vocab_size, max_context=max_context)
    first = request.route.hops[0]
    if first.node_id != node_id:
        raise StaleRoute(
            f"Submit must go to the route's first hop ({first.node_id}), not to {node_id}"
        )
    check_hop(request, node_id=node_id, held=held)
