"""Request bodies of the OpenAI endpoints, validated at the edge.

Unknown fields are rejected (`extra="forbid"`), so a parameter this server does
not implement (`tools`, `functions`, `audio`...) is a 400 naming it rather than
being silently ignored. A few parameters are accepted only with the value that
means "nothing special" (`response_format={"type": "text"}`, `echo=false`...).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_CHOICES = 16
MAX_STOP_STRINGS = 4
MAX_TOP_LOGPROBS = 20

_STRICT = ConfigDict(extra="forbid", strict=True)

Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool | None = None


class ChatMessage(BaseModel):
    model_config = _STRICT
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]]

    @field_validator("content")
    @classmethod
    def _text_only(cls, value: str | list[dict[str, Any]]) -> str:
        if isinstance(value, str):
            return value
        texts = []
        for part in value:
            kind = part.get("type")
            if kind != "text":
                raise ValueError(f"only text content parts are supported, got type {kind!r}")
            if set(part) - {"type", "text"} or not isinstance(part.get("text"), str):
                raise ValueError('a text content part is {"type": "text", "text": "..."}')
            texts.append(part["text"])
        return "".join(texts)

    def as_template_message(self) -> dict[str, str]:
        # Chat templates know "system"; "developer" is OpenAI's newer name for it.
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": str(self.content)}


class _SamplingFields(BaseModel):
    """Parameters shared by chat and text completions, including vLLM's extensions."""

    model_config = _STRICT

    model: str
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    seed: Annotated[int, Field(ge=0, lt=2**63)] | None = None
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP_STRINGS)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES)] | None = None
    user: str | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    # vLLM extensions
    top_k: Annotated[int, Field(ge=-1)] | None = None
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0.0, le=10.0)] | None = None
    ignore_eos: bool | None = None
    min_tokens: Annotated[int, Field(ge=0)] | None = None
    stop_token_ids: list[Annotated[int, Field(ge=0)]] | None = None

    @field_validator("stop")
    @classmethod
    def _non_empty_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if any(not s for s in stops):
            raise ValueError("stop strings must be non-empty")
        return value

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class ChatCompletionRequest(_SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    # Accepted only with their neutral values; see `unsupported_values`.
    response_format: dict[str, Any] | None = None
    modalities: list[str] | None = None
    store: bool | None = None
    parallel_tool_calls: bool | None = None


class CompletionRequest(_SamplingFields):
    prompt: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[str], Field(min_length=1)]
        | Annotated[list[int], Field(min_length=1)]
        | Annotated[list[Annotated[list[int], Field(min_length=1)]], Field(min_length=1)]
    )
    logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    echo: bool | None = None
    best_of: Annotated[int, Field(ge=1)] | None = None
    suffix: str | None = None


def unsupported_values(req: _SamplingFields) -> tuple[str, str] | None:
    """(parameter, why) for the first accepted-but-only-if-neutral parameter set otherwise."""
    if isinstance(req, ChatCompletionRequest):
        if req.response_format not in (None, {"type": "text"}):
            return "response_format", 'only {"type": "text"} is supported'
        if req.modalities not in (None, ["text"]):
            return "modalities", 'only ["text"] is supported'
        if req.store:
            return "store", "this server does not store completions"
        if req.parallel_tool_calls is not None:
            return "parallel_tool_calls", "tool calls are not supported"
        if req.top_logprobs is not None and not req.logprobs:
            return "top_logprobs", "needs logprobs=true"
    if isinstance(req, CompletionRequest):
        if req.echo:
            return "echo", "echoing the prompt is not supported"
        if req.suffix:
            return "suffix", "suffix (insertion) is not supported"
        if req.best_of not in (None, req.n or 1):
            return "best_of", "only best_of equal to n is supported"
    if req.stream_options is not None and not req.stream:
        return "stream_options", "only allowed with stream=true"
    return None
