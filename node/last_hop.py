"""What the last hop does with a step's logits: which rows may be sampled, and the
event each sampled token becomes. Pure over the requests' records; the pipeline
applies the result (node/pipeline.py `_sample`)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from node.engine.runner import Chunk
from node.engine.sampler import RequestSampler, Sampled
from node.request import NodeRequest
from parallax.rpc import parallax_pb2 as pb

NON_FINITE = (
    "the model's logits are not finite (NaN or overflow) on this node; float16 overflows "
    "on some models: try --dtype bfloat16"
)


def sampleable(
    chunks: list[Chunk],
    logits: torch.Tensor,
    reqs: Mapping[str, NodeRequest],
    eos_ids: frozenset[int],
    max_context: int,
) -> tuple[list[NodeRequest], list[RequestSampler], torch.Tensor, list[tuple[str, str]]]:
    """(requests, their samplers, their logits rows, [(request id, why)] to fail).

    A row that overflowed (or came in as NaN) fails its own request: drawing from it
    would fail the whole step, and every request on this node with it. A chunk must end
    where its request's tokens so far end (after a re-prefill too), or a token would be
    repeated or skipped in the stream.
    """
    taken, samplers, keep, failed = [], [], [], []
    finite = torch.isfinite(logits).all(-1).tolist()
    for i, c in enumerate(c for c in chunks if c.sample):
        if not finite[i]:
            failed.append((c.request_id, NON_FINITE))
            continue
        req = reqs[c.request_id]
        s = req.sampler_for(eos_ids, max_context)
        have = len(s.prompt_ids) + len(s.generated)
        if c.start + c.n != have:
            why = f"out of step: sampling after token {c.start + c.n}, the request has {have}"
            failed.append((c.request_id, why))
            continue
        taken.append(req)
        samplers.append(s)
        keep.append(i)
    if len(keep) < logits.shape[0]:
        logits = logits[torch.tensor(keep, dtype=torch.long)]
    return taken, samplers, logits, failed


def token_event(req: NodeRequest, s: RequestSampler, res: Sampled) -> pb.TokenEvent:
    """The event a sampled token becomes (`s` already holds it): finished when it ends
    the request; it carries the request's grant signature for the push to the first hop."""
    reason = s.finish_reason()
    ev = pb.TokenEvent(
        request_id=req.rid,
        token_id=res.token_id,
        finished=reason is not None,
        finish_reason=reason or "",
        logprob=res.logprob,
        index=len(s.generated) - 1,
        grant_signature=req.submit.capability.signature,
    )
    for tok, lp in res.top:
        ev.top_logprobs.add(token_id=tok, logprob=lp)
    return ev
