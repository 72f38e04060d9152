"""From a validated request body to per-choice `SamplingParams`, plus the checks
every generation request passes before any token is produced.
"""

from __future__ import annotations

import dataclasses
import logging

from coordinator.gateway.errors import ApiError, bad_request
from coordinator.gateway.generation import GatewayContext
from coordinator.gateway.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    unknown_fields,
    unsupported_values,
)
from parallax.errors import ContextOverflow
from parallax.sampling import SamplingParams

log = logging.getLogger(__name__)

DEFAULT_TEMPERATURE = 1.0
# Odd 64-bit constant (golden ratio): spreads choice seeds far apart.
_SEED_STRIDE = 0x9E3779B97F4A7C15
_SEED_SPACE = 2**63


def choice_seed(seed: int | None, index: int) -> int | None:
    """Choice 0 keeps the request's seed, so n=1 and choice 0 of n>1 agree."""
    if seed is None:
        return None
    return (seed + index * _SEED_STRIDE) % _SEED_SPACE


def resolve_max_tokens(requested: int | None, prompt_len: int, context_length: int) -> int:
    room = context_length - prompt_len
    if room < 1:
        raise ContextOverflow(
            f"the prompt has {prompt_len} tokens and the model's context is {context_length} "
            "tokens: no room is left to generate; shorten the prompt"
        )
    if requested is None:
        return room
    if requested > room:
        raise ContextOverflow(
            f"the prompt has {prompt_len} tokens and max_tokens is {requested}, together over "
            f"the model's context of {context_length} tokens; ask for at most {room} tokens"
        )
    return requested


def _logit_bias(raw: dict[str, float] | None) -> dict[int, float]:
    out: dict[int, float] = {}
    for key, bias in (raw or {}).items():
        try:
            out[int(key)] = bias
        except ValueError:
            raise bad_request(
                f"logit_bias keys are token ids, got {key!r}", param="logit_bias"
            ) from None
    return out


def _logprobs(req: ChatCompletionRequest | CompletionRequest) -> int:
    if isinstance(req, ChatCompletionRequest):
        return (req.top_logprobs or 0) if req.logprobs else -1
    return -1 if req.logprobs is None else req.logprobs


def base_sampling(
    req: ChatCompletionRequest | CompletionRequest,
    prompt_len: int,
    context_length: int,
    vocab_size: int,
) -> SamplingParams:
    """The sampling of choice 0; raises InvalidArgument / ContextOverflow (HTTP 400)."""
    requested = req.max_tokens
    if isinstance(req, ChatCompletionRequest) and req.max_completion_tokens is not None:
        requested = req.max_completion_tokens
    params = SamplingParams(
        temperature=DEFAULT_TEMPERATURE if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=max(req.top_k or 0, 0),  # vLLM spells "off" as -1
        min_p=req.min_p or 0.0,
        seed=req.seed,
        repetition_penalty=1.0 if req.repetition_penalty is None else req.repetition_penalty,
        presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        stop_token_ids=tuple(req.stop_token_ids or ()),
        max_tokens=resolve_max_tokens(requested, prompt_len, context_length),
        min_tokens=req.min_tokens or 0,
        ignore_eos=bool(req.ignore_eos),
        logprobs=_logprobs(req),
        logit_bias=_logit_bias(req.logit_bias),
    )
    params.check_vocab(vocab_size)
    return params


def for_choice(base: SamplingParams, index: int) -> SamplingParams:
    return dataclasses.replace(base, seed=choice_seed(base.seed, index))


def check_model(gw: GatewayContext, model: str | None) -> None:
    """404 unless `model` is the name served (see --served-model-name); None passes."""
    if model is not None and model != gw.model_id:
        raise ApiError(
            404,
            f"the model {model!r} does not exist; this server serves {gw.model_id!r}",
            type="not_found_error",
            param="model",
            code="model_not_found",
        )


def check_fields(body: ChatCompletionRequest | CompletionRequest, strict: bool) -> None:
    """Unknown fields: a 400 under --strict-params, else a warning (as vLLM does).
    Known fields whose lack of effect could surprise are logged too."""
    unknown = unknown_fields(body)
    if unknown and strict:
        raise ApiError(
            400,
            f"unsupported parameter {unknown[0]!r}: this server does not implement it "
            "(the gateway runs with --strict-params)",
            param=unknown[0],
            code="unsupported_parameter",
        )
    if unknown:
        log.warning("ignored unknown request fields", extra={"fields": unknown})
    if isinstance(body, ChatCompletionRequest) and body.store:
        log.info("store=true ignored: this server does not store completions")


def check_request(
    gw: GatewayContext, body: ChatCompletionRequest | CompletionRequest, strict: bool = False
) -> None:
    """400 for unknown fields (when `strict`) and for parameters accepted only with
    neutral values, 404 for another model, then 503/429 from the backend when the
    cluster cannot run anything now."""
    check_fields(body, strict)
    bad = unsupported_values(body)
    if bad is not None:
        param, why = bad
        raise bad_request(f"parameter {param!r} is not supported here: {why}", param=param)
    check_model(gw, body.model)
    gw.backend.check_ready()
