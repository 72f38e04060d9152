"""`POST /v1/chat/completions`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from coordinator.gateway.checks import check_request
from coordinator.gateway.context import GatewayContext
from coordinator.gateway.formats import Envelope, chat_choice, chat_delta, chat_logprobs
from coordinator.gateway.generation import ChoicePlan, ChoiceResult, Generation, new_id, now
from coordinator.gateway.params import base_sampling, for_choice
from coordinator.gateway.responder import respond
from coordinator.gateway.schemas import ChatCompletionRequest
from coordinator.gateway.textstream import Piece
from coordinator.gateway.token_text import TokenTexts


class ChatFormat:
    def __init__(self, texts: TokenTexts, with_logprobs: bool) -> None:
        self._texts = texts
        self._with_logprobs = with_logprobs

    def _logprobs(self, piece_logprobs: Any) -> dict[str, Any] | None:
        return chat_logprobs(piece_logprobs, self._texts) if self._with_logprobs else None

    def opening(self, index: int) -> dict[str, Any]:
        return chat_delta(index, {"role": "assistant", "content": ""})

    def delta(self, index: int, piece: Piece) -> dict[str, Any]:
        return chat_delta(index, {"content": piece.text}, None, self._logprobs(piece.logprobs))

    def finish(self, index: int, finish_reason: str) -> dict[str, Any]:
        return chat_delta(index, {}, finish_reason)

    def whole(self, index: int, result: ChoiceResult) -> dict[str, Any]:
        text = "".join(result.text)
        return chat_choice(index, text, result.finish_reason, self._logprobs(result.logprobs))


def chat_router(gw: GatewayContext) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/chat/completions", response_model=None)
    async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Response:
        check_request(gw, body)
        messages = [m.as_template_message() for m in body.messages]
        prompt = tuple(gw.tokenizer.encode_chat(messages))
        base = base_sampling(body, len(prompt), gw.context_length, gw.tokenizer.vocab_size)
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
        gen = Generation(gw, http_id, plans, body.stop_strings())
        return await respond(
            request,
            gen,
            env,
            ChatFormat(gw.texts, bool(body.logprobs)),
            stream=stream,
            include_usage=bool(body.stream_options and body.stream_options.include_usage),
            n_choices=n,
        )

    return router
