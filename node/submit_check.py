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


def check_submit(
    request: pb.SubmitRequest,
    *,
    node_id: str,
    held: LayerRange,
    num_layers: int,
    vocab_size: int,
    max_context: int,
) -> None:
    """Raise InvalidArgument, saying what is wrong, unless this node can start `request`."""
    if not request.request_id or not is_host_port(request.reply_to):
        raise InvalidArgument("Submit needs a request_id and a HOST:PORT reply_to address")
    SamplingParams.from_proto(request.sampling).check_vocab(vocab_size)
    ids = request.prompt_ids
    if not ids or any(not 0 <= t < vocab_size for t in ids):
        raise InvalidArgument("the prompt is empty or has a token id outside the vocabulary")
    if len(ids) >= max_context:
        raise InvalidArgument(f"the prompt has {len(ids)} tokens; context is {max_context}")
    check_route(request.route.hops, num_layers)
    first = request.route.hops[0]
    if first.node_id != node_id:
        raise StaleRoute(
            f"Submit must go to the route's first hop ({first.node_id}), not to {node_id}"
        )
    if not held.covers(LayerRange(first.start, first.end)):
        raise StaleRoute(
            f"request {request.request_id}: hop [{first.start}, {first.end}) is outside this "
            f"node's layers {held}; the route is stale"
        )
