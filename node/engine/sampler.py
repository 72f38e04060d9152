"""Token sampling with per-request state: penalties, filters, seeds, logprobs, stops."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from parallax.sampling import SamplingParams


@dataclass
class RequestSampler:
    """Sampling state of one request, held by the node that samples (the last shard)."""

    params: SamplingParams
    prompt_ids: list[int]
    eos_ids: frozenset[int]
    max_context: int
    generated: list[int] = field(default_factory=list)
    generator: torch.Generator = field(init=False)

    def __post_init__(self) -> None:
        # A private generator per request: its draws depend on its own seed only,
        # whatever it is batched with.
        self.generator = torch.Generator()
        seed = self.params.seed if self.params.seed is not None else random.getrandbits(63)
        self.generator.manual_seed(seed)

    def finish_reason(self) -> str | None:
        p, last = self.params, self.generated[-1]
        if len(self.generated) >= p.min_tokens:
            if last in p.stop_token_ids or (not p.ignore_eos and last in self.eos_ids):
                return "stop"
        if len(self.generated) >= p.max_tokens:
            return "length"
        if len(self.prompt_ids) + len(self.generated) >= self.max_context:
            return "length"
        return None


@dataclass(frozen=True)
class Sampled:
    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...]


def _adjust(logits: torch.Tensor, s: RequestSampler) -> torch.Tensor:
    p = s.params
    if p.logit_bias:
        ids = torch.tensor(list(p.logit_bias), dtype=torch.long)
        logits[ids] += torch.tensor(list(p.logit_bias.values()), dtype=logits.dtype)
    if p.repetition_penalty != 1.0:
        seen = torch.tensor(sorted(set(s.prompt_ids) | set(s.generated)), dtype=torch.long)
        if len(seen):
            vals = logits[seen]
            logits[seen] = torch.where(
                vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty
            )
    if (p.presence_penalty or p.frequency_penalty) and s.generated:
        ids, counts = torch.tensor(s.generated).unique(return_counts=True)
        logits[ids] -= p.frequency_penalty * counts.to(logits.dtype) + p.presence_penalty
    if len(s.generated) < p.min_tokens:
        # Too early to stop: neither EOS nor a stop token may be drawn yet.
        banned = sorted(set(s.eos_ids) | set(p.stop_token_ids))
        if banned:
            logits[torch.tensor(banned)] = float("-inf")
    return logits


def _filter(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    logits = logits / p.temperature
    if p.top_k:
        kth = torch.topk(logits, min(p.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, -1)
    if p.min_p:
        probs = probs.masked_fill(probs < p.min_p * probs.max(), 0.0)
    if p.top_p < 1.0:
        sorted_p, idx = probs.sort(descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        drop = (sorted_p.cumsum(-1) - sorted_p) >= p.top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(0, idx, sorted_p)
    return probs


def _plain_greedy(s: RequestSampler) -> bool:
    """Greedy with nothing `_adjust` would change and no logprobs asked."""
    p = s.params
    return (
        p.greedy
        and p.logprobs < 0
        and not p.logit_bias
        and p.repetition_penalty == 1.0
        and not ((p.presence_penalty or p.frequency_penalty) and s.generated)
        and len(s.generated) >= p.min_tokens
    )


def sample(
    logits: torch.Tensor, samplers: list[RequestSampler], vocab_limit: int | None = None
) -> list[Sampled]:
    """One token per row of `logits` [S, V]; appends it to each request's history.

    `vocab_limit`: ids at or above it are never drawn. Models pad their embedding past
    the tokenizer's vocabulary; such ids have no text and must not be sampled.
    """
    # Sampling state (generators, histories) lives on the CPU; logits come to it.
    logits = logits.float().cpu()
    if vocab_limit is not None and vocab_limit < logits.shape[-1]:
        logits = logits.clone()
        logits[:, vocab_limit:] = float("-inf")
    # Plain greedy rows (nothing to adjust, no logprobs) take one batched argmax: no
    # per-row copy of the logits.
    plain = [i for i, s in enumerate(samplers) if _plain_greedy(s)]
    argmaxes = {}
    if plain:  # every row plain (the common case): no gather of the rows first
        rows = logits if len(plain) == len(samplers) else logits[plain]
        # max's indices: the first maximum, as argmax, in 2/3 of argmax's time here.
        argmaxes = dict(zip(plain, rows.max(-1).indices.tolist(), strict=True))
    out = []
    for i, (row, s) in enumerate(zip(logits, samplers, strict=True)):
        if i in argmaxes:
            s.generated.append(argmaxes[i])
            out.append(Sampled(argmaxes[i], 0.0, ()))
            continue
        row = _adjust(row.clone(), s)
        p = s.params
        if p.greedy:
            token = int(torch.argmax(row))
        else:
            probs = _filter(row, p)
            token = int(torch.multinomial(probs, 1, generator=s.generator))
        logprob, top = 0.0, ()
        if p.logprobs >= 0:
            lp = torch.log_softmax(row, -1)
            logprob = float(lp[token])
            if p.logprobs > 0:
                v, i = torch.topk(lp, p.logprobs)
                top = tuple(zip(i.tolist(), v.tolist(), strict=True))
        s.generated.append(token)
        out.append(Sampled(token, logprob, top))
    return out
