"""`POST /tokenize`, `POST /detokenize` and `GET /version`, in vLLM's shapes.

`/tokenize` takes either a `prompt` (encoded as `/v1/completions` would, with
the tokenizer's special tokens unless `add_special_tokens` is false) or chat
`messages` (rendered by the chat template exactly as `/v1/chat/completions`
renders them, `tools` and `chat_template_kwargs` included), so a client can
count a request's prompt tokens before sending it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field, model_validator

from coordinator.gateway.generation import GatewayContext
from coordinator.gateway.messages import STRICT, ChatMessage, ToolDef
from coordinator.gateway.params import check_model
from parallax import __version__


class TokenizeRequest(BaseModel):
    model_config = STRICT
    model: str | None = None
    prompt: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    # Default: true for a prompt, false for messages (the template writes them).
    add_special_tokens: bool | None = None
    add_generation_prompt: bool = True
    return_token_strs: bool = False
    tools: list[ToolDef] | None = None
    chat_template_kwargs: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _prompt_or_messages(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt and messages")
        if self.prompt is None and self.add_special_tokens:
            raise ValueError("add_special_tokens is for a prompt: the chat template writes them")
        return self


class DetokenizeRequest(BaseModel):
    model_config = STRICT
    model: str | None = None
    tokens: list[int]


def _token_ids(gw: GatewayContext, body: TokenizeRequest) -> list[int]:
    if body.prompt is not None:
        return gw.tokenizer.encode(
            body.prompt, add_special_tokens=body.add_special_tokens is not False
        )
    messages = [m.as_template_message() for m in body.messages or ()]
    tools = [t.template_entry() for t in body.tools] if body.tools else None
    return gw.tokenizer.encode_chat(
        messages, body.add_generation_prompt, tools, body.chat_template_kwargs
    )


def tokenize_router(gw: GatewayContext) -> APIRouter:
    router = APIRouter()

    @router.post("/tokenize")
    async def tokenize(body: TokenizeRequest) -> dict[str, Any]:
        check_model(gw, body.model)
        ids = _token_ids(gw, body)
        strs = [gw.tokenizer.id_to_token(i) for i in ids] if body.return_token_strs else None
        return {
            "count": len(ids),
            "max_model_len": gw.context_length,
            "tokens": ids,
            "token_strs": strs,
        }

    @router.post("/detokenize")
    async def detokenize(body: DetokenizeRequest) -> dict[str, Any]:
        check_model(gw, body.model)
        # Special tokens are kept, so detokenize(tokenize(x)) gives x back.
        return {"prompt": gw.tokenizer.decode(body.tokens, skip_special_tokens=False)}

    return router


def version_router() -> APIRouter:
    router = APIRouter()

    @router.get("/version")
    async def version() -> dict[str, str]:
        return {"version": __version__}

    return router
