"""What the last hop does with a step's logits: which rows may be sampled, under which
grammar masks, and the event each sampled token becomes. Pure over the requests'
records; the pipeline applies the result (node/pipeline.py `_sample`)."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future

import torch

from node.engine.runner import Chunk
from node.engine.sampler import RequestSampler, Sampled
from node.grammar import Grammars
from node.request import NodeRequest
from parallax.errors import InvalidArgument, ParallaxError
from parallax.failures import FailureKind, failure_event
from parallax.rpc import parallax_pb2 as pb
from parallax.sampling import SamplingParams

NON_FINITE = (
    "the model's logits are not finite (NaN or overflow) on this node; float16 overflows "
    "on some models: try --dtype bfloat16"
)
NO_GRAMMARS = "this node cannot constrain decoding (it was started without a grammar engine)"


def start_grammar(req: NodeRequest, num_layers: int, grammars: Grammars | None) -> None:
    """On the hop that samples a constrained request: start compiling its grammar now,
    in the background, so the step that first samples it finds it ready."""
    if req.layers.end != num_layers or not req.submit.sampling.HasField("grammar"):
        return
    spec = SamplingParams.from_proto(req.submit.sampling).grammar
    if spec is None:
        return
    if grammars is None:
        req.grammar = Future()
        req.grammar.set_exception(InvalidArgument(NO_GRAMMARS))
        return
    req.grammar = grammars.compile(spec)


def sampleable(
    chunks: list[Chunk],
    logits: torch.Tensor,
    reqs: Mapping[str, NodeRequest],
    eos_ids: frozenset[int],
    max_context: int,
    grammars: Grammars | None = None,
) -> tuple[
    list[NodeRequest], list[RequestSampler], torch.Tensor, list[tuple[str, FailureKind, str]]
]:
    """(requests, their samplers, their logits rows, [(request id, kind, why)] to fail).

    A row that overflowed (or came in as NaN) fails its own request: drawing from it
    would fail the whole step, and every request on this node with it. A chunk must end
    where its request's tokens so far end (after a re-prefill too), or a token would be
    repeated or skipped in the stream. Rows of constrained requests come back with every
    token their grammar forbids at -inf.
    """
    taken, samplers, keep, failed = [], [], [], []
    finite = torch.isfinite(logits).all(-1).tolist()
    for i, c in enumerate(c for c in chunks if c.sample):
        if not finite[i]:
            failed.append((c.request_id, FailureKind.INTERNAL, NON_FINITE))
            continue
        req = reqs[c.request_id]
        s = req.sampler_for(eos_ids, max_context)
        have = len(s.prompt_ids) + len(s.generated)
        if c.start + c.n != have:
            why = f"out of step: sampling after token {c.start + c.n}, the request has {have}"
            failed.append((c.request_id, FailureKind.INTERNAL, why))
            continue
        if req.grammar is not None and req.matcher is None:
            try:
                req.matcher = Grammars.start(req.grammar, s.generated)
            except ParallaxError as e:
                failed.append((c.request_id, FailureKind.of(e), str(e)))
                continue
        taken.append(req)
        samplers.append(s)
        keep.append(i)
    if len(keep) < logits.shape[0]:
        logits = logits[torch.tensor(keep, dtype=torch.long)]
    rows = [k for k, req in enumerate(taken) if req.matcher is not None]
    if rows and grammars is not None:
        allowed = grammars.allowed([taken[k].matcher for k in rows], logits.shape[-1])
        idx = torch.tensor(rows, dtype=torch.long, device=logits.device)
        logits = logits.clone() if len(keep) == len(finite) else logits
        logits[idx] = logits[idx].masked_fill(~allowed.to(logits.device), float("-inf"))
    return taken, samplers, logits, failed


def token_event(req: NodeRequest, s: RequestSampler, res: Sampled) -> pb.TokenEvent:
    """The event a sampled token becomes (`s` already holds it): finished when it ends
    the request, or completes its grammar; it carries the request's grant signature for
    the push to the first hop."""
    reason = s.finish_reason()
    if req.matcher is not None:
        if not req.matcher.consume_token(res.token_id):
            why = f"the sampled token {res.token_id} broke the grammar: {req.matcher.get_error()}"
            return failure_event(req.rid, FailureKind.INTERNAL, why)
        if req.matcher.is_stopped():  # the grammar is complete: nothing more may follow
            reason = "stop"
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
