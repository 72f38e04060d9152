"""One record per request on a node: everything the node holds for it, in one place.

`NodePipeline.forget` drops the record (and frees its KV): there is nothing else to
clear. A request's record lives from its Submit (first hop) or its first Forward
chunk (other hops) until it finishes, fails or is released.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from node.engine.sampler import RequestSampler
from node.engine.scheduler import Sequence
from parallax.rpc import parallax_pb2 as pb
from parallax.sampling import SamplingParams
from parallax.types import LayerRange


@dataclass(eq=False)
class NodeRequest:
    submit: pb.SubmitRequest  # route, sampling, reply_to: as the gateway sent it
    hop: int  # index of this node in the route
    layers: LayerRange  # the layers this node runs for the request
    seq: Sequence | None = None  # first hop only: the scheduler's sequence
    sampler: RequestSampler | None = None  # last hop only: made at its first sample
    preempted: int = 0  # times this first hop preempted it (it re-prefills from 0)
    restarted: int = 0  # times this hop started it over on such a re-prefill
    awaiting_reprefill: bool = False  # a KV-only release freed its KV before that
    # Last hop of a constrained request only (node/grammar.py): its grammar, compiling
    # from the moment the request arrived, and its matcher, made at its first sample.
    grammar: Future | None = None
    matcher: Any = None  # llguidance.LLMatcher

    @property
    def rid(self) -> str:
        return self.submit.request_id

    @property
    def hops(self):
        return self.submit.route.hops

    @property
    def reply_to(self) -> str:
        return self.submit.reply_to

    @property
    def first_address(self) -> str:
        return self.hops[0].address

    @property
    def next_address(self) -> str:
        return self.hops[self.hop + 1].address

    def sampler_for(self, eos_ids: frozenset[int], max_context: int) -> RequestSampler:
        """The request's sampling state, made at its first sample. A replayed request
        carries its generated tokens at the end of the prompt: they count towards
        max_tokens and the penalties, as on the first chain."""
        if self.sampler is None:
            params = SamplingParams.from_proto(self.submit.sampling)
            ids = list(self.submit.prompt_ids)
            offset = max(0, min(self.submit.generated_offset, len(ids)))
            self.sampler = RequestSampler(params, ids[: len(ids) - offset], eos_ids, max_context)
            self.sampler.generated = ids[len(ids) - offset :]
        return self.sampler
