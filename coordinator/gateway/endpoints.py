"""`POST /v1/chat/completions` and `POST /v1/completions`, and their OpenAI shapes.

The two endpoints share everything but how prompts are made and how choices
are spelled: each has a `Format` (see responder.py; chat's is in chat_format.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request, Response

from coordinator.gateway.chat_format import ChatFormat
from coordinator.gateway.errors import bad_request
from coordinator.gateway.generation import (
    ChoicePlan,
    ChoiceResult,
    GatewayContext,
    Generation,
    client_of,
    new_id,
    now,
)
from coordinator.gateway.params import base_sampling, check_request, for_choice
from coordinator.gateway.responder import Envelope, respond
from coordinator.gateway.schemas import MAX_CHOICES, ChatCompletionRequest, CompletionRequest
from coordinator.gateway.structured import request_grammar
from coordinator.gateway.textstream import LogprobEntry, Piece, TokenTexts


def completion_logprobs(entries: Sequence[LogprobEntry], texts: TokenTexts) -> dict[str, Any]:
    """The legacy completions layout: parallel lists."""
    return {
        "tokens": [texts.piece(e.token_id).text for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{texts.piece(t).text: lp for t, lp in e.top} for e in entries],
        "text_offset": [e.text_offset for e in entries],
    }


def completion_choice(
    index: int, text: str, finish_reason: str | None, logprobs: dict[str, Any] | None
) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}


def chat_prompt(gw: GatewayContext, body: ChatCompletionRequest) -> tuple[int, ...]:
    messages = [m.as_template_message() for m in body.messages]
    return tuple(
        gw.tokenizer.encode_chat(
            messages,
            tools=body.template_tools(),
            template_kwargs=body.chat_template_kwargs,
        )
    )


def chat_router(gw: GatewayContext, strict_params: bool = False) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/chat/completions", response_model=None)
    async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Response:
        check_request(gw, body, strict_params)
        prompt = chat_prompt(gw, body)
        base = base_sampling(body, len(prompt), gw.context_length, gw.tokenizer.vocab_size)
        base = dataclasses.replace(base, grammar=request_grammar(body, gw.tokenizer))
        n = body.n or 1
        plans = [ChoicePlan(i, 0, prompt, for_choice(base, i)) for i in range(n)]
        http_id = new_id("chatcmpl")
        stream = bool(body.stream)
        env = Envelope(
            http_id,
            "chat.completion.chunk" if stream else "chat.completion",
            now(),
            gw.model_id,
        )
        gen = Generation(gw, http_id, plans, body.stop_strings(), client_of(request))
        return await respond(
            request,
            gen,
            env,
            ChatFormat(
                gw.texts,
                bool(body.logprobs),
                parse_tools=body.tool_parsing(),
                parallel_tool_calls=body.parallel_tool_calls is not False,
            ),
            stream=stream,
            include_usage=bool(body.stream_options and body.stream_options.include_usage),
            n_choices=n,
        )

    return router


class CompletionFormat:
    def __init__(self, texts: TokenTexts, with_logprobs: bool) -> None:
        self._texts = texts
        self._with_logprobs = with_logprobs

    def _logprobs(self, entries: list[LogprobEntry] | tuple[LogprobEntry, ...]) -> Any:
        return completion_logprobs(entries, self._texts) if self._with_logprobs else None

    def opening(self, index: int) -> None:
        return None  # text completions have no role chunk

    def delta(self, index: int, piece: Piece) -> dict[str, Any]:
        return completion_choice(index, piece.text, None, self._logprobs(piece.logprobs))

    def finish(self, index: int, finish_reason: str) -> dict[str, Any]:
        return completion_choice(index, "", finish_reason, None)

    def whole(self, index: int, result: ChoiceResult) -> dict[str, Any]:
        text = "".join(result.text)
        return completion_choice(index, text, result.finish_reason, self._logprobs(result.logprobs))


def prompt_token_lists(gw: GatewayContext, prompt: Any) -> list[tuple[int, ...]]:
    """Every accepted prompt form as token-id tuples; ids outside the vocabulary are a 400."""
    if isinstance(prompt, str):
        prompts = [prompt]
    elif all(isinstance(p, int) for p in prompt):
        return [_check_ids(gw, prompt)]
    else:
        prompts = prompt
    out = []
    for p in prompts:
        ids = _check_ids(gw, p) if isinstance(p, list) else tuple(gw.tokenizer.encode(p))
        if not ids:
            raise bad_request("a prompt encodes to no tokens", param="prompt")
        out.append(ids)
    return out


def _check_ids(gw: GatewayContext, ids: list[int]) -> tuple[int, ...]:
    vocab = gw.tokenizer.vocab_size
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise bad_request(f"token ids {bad[:5]} are outside the vocabulary [0, {vocab})", "prompt")
    return tuple(ids)


def completions_router(gw: GatewayContext, strict_params: bool = False) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/completions", response_model=None)
    async def create_completion(body: CompletionRequest, request: Request) -> Response:
        check_request(gw, body, strict_params)
        prompts = prompt_token_lists(gw, body.prompt)
        n = body.n or 1
        if len(prompts) * n > MAX_CHOICES:
            raise bad_request(
                f"{len(prompts)} prompts x n={n} is over {MAX_CHOICES} choices", param="n"
            )
        plans = []
        for p, ids in enumerate(prompts):
            base = base_sampling(body, len(ids), gw.context_length, gw.tokenizer.vocab_size)
            plans += [ChoicePlan(p * n + i, p, ids, for_choice(base, i)) for i in range(n)]
        http_id = new_id("cmpl")
        env = Envelope(http_id, "text_completion", now(), gw.model_id)
        gen = Generation(gw, http_id, plans, body.stop_strings(), client_of(request))
        return await respond(
            request,
            gen,
            env,
            CompletionFormat(gw.texts, body.logprobs is not None),
            stream=bool(body.stream),
            include_usage=bool(body.stream_options and body.stream_options.include_usage),
            n_choices=len(plans),
        )

    return router
