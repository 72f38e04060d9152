"""Request bodies of the OpenAI endpoints, validated at the edge.

As in vLLM, an unknown top-level or message field is accepted and listed by
`unknown_fields` (the gateway logs a warning, or answers 400 under
--strict-params); known fields without effect here (`metadata`, `store`, `user`,
`service_tier`, `name` on messages) are accepted. Values are validated strictly:
a wrong type is a 400 naming the field. Parameters that would change the answer
but are not implemented (`echo`, `suffix`...) are accepted only with their neutral
value: see `unsupported_values`. `response_format` and a forced `tool_choice` become a
grammar (structured.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator

from coordinator.gateway.messages import (
    LENIENT,
    STRICT,
    ChatMessage,
    NamedToolChoice,
    ResponseFormat,
    ToolChoice,
    ToolDef,
)

MAX_CHOICES = 16
MAX_STOP_STRINGS = 4
MAX_TOP_LOGPROBS = 20

Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]


class StreamOptions(BaseModel):
    model_config = STRICT
    include_usage: bool | None = None


class _SamplingFields(BaseModel):
    """Parameters shared by chat and text completions, including vLLM's extensions."""

    model_config = LENIENT

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
    # Known and without effect here.
    user: str | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
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
    tools: list[ToolDef] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    store: bool | None = None  # nothing is stored: logged when true
    chat_template_kwargs: dict[str, Any] | None = None  # vLLM: extra template variables
    response_format: ResponseFormat | None = None  # json modes: see structured.py
    # Accepted only with their neutral values; see `unsupported_values`.
    modalities: list[str] | None = None
    # OpenAI's deprecated spelling of tools: refused with a pointer to `tools`.
    functions: list[Any] | None = None
    function_call: Any = None

    def tool_parsing(self) -> bool:
        """Whether the answer is searched for tool calls."""
        return bool(self.tools) and self.tool_choice != "none"

    def template_tools(self) -> list[dict[str, Any]] | None:
        return [t.template_entry() for t in self.tools] if self.tools else None


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


# Variables the request sets itself; chat_template_kwargs may not override them.
_RESERVED_TEMPLATE_VARS = frozenset({"messages", "tools", "add_generation_prompt"})


def _chat_unsupported(req: ChatCompletionRequest) -> tuple[str, str] | None:
    if req.functions is not None or req.function_call is not None:
        param = "functions" if req.functions is not None else "function_call"
        return param, "it is deprecated by OpenAI; send tools and tool_choice instead"
    names = [t.function.name for t in req.tools or ()]
    if len(set(names)) != len(names):
        return "tools", "two tools have the same function name"
    choice = req.tool_choice
    if choice not in (None, "none", "auto") and not req.tools:
        return "tool_choice", "a tool_choice other than none/auto needs tools"
    if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
        return "tool_choice", f"no tool is named {choice.function.name!r}"
    reserved = sorted(_RESERVED_TEMPLATE_VARS & set(req.chat_template_kwargs or {}))
    if reserved:
        return "chat_template_kwargs", f"{reserved} are set by the request's own fields"
    if req.modalities not in (None, ["text"]):
        return "modalities", 'only ["text"] is supported'
    if req.top_logprobs is not None and not req.logprobs:
        return "top_logprobs", "needs logprobs=true"
    return None


def unsupported_values(req: _SamplingFields) -> tuple[str, str] | None:
    """(parameter, why) for the first parameter this server cannot honour as given."""
    if isinstance(req, ChatCompletionRequest):
        bad = _chat_unsupported(req)
        if bad is not None:
            return bad
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


def unknown_fields(req: _SamplingFields) -> list[str]:
    """Dotted names of the fields no model here declares (`foo`, `messages.2.bar`)."""
    names = list(req.model_extra or {})
    if isinstance(req, ChatCompletionRequest):
        for i, m in enumerate(req.messages):
            names += [f"messages.{i}.{k}" for k in m.model_extra or {}]
    return names
