"""Chat messages, tool definitions and `response_format`, as OpenAI spells them.

Values are validated strictly (a wrong type is a 400 naming the field). Fields a
message may carry without effect here (`name` goes to the template, which may
use it; `refusal` is echoed back by clients that append our own message) are
accepted; unknown message fields are collected by `unknown_fields` in schemas.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

STRICT = ConfigDict(extra="forbid", strict=True)
# Unknown fields are kept in `model_extra`: warned about, or a 400 under --strict-params.
LENIENT = ConfigDict(extra="allow", strict=True)

# OpenAI's pattern, plus the dots and colons of namespaced (MCP) tool names.
FunctionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:\-]{1,64}$")]


class FunctionCall(BaseModel):
    model_config = STRICT
    name: FunctionName
    arguments: str  # JSON text, as OpenAI sends it


class ToolCallEntry(BaseModel):
    """An `assistant` message's earlier call, sent back in the history."""

    model_config = STRICT
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


def _join_text_parts(value: str | list[dict[str, Any]]) -> str:
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


class ChatMessage(BaseModel):
    model_config = LENIENT
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCallEntry] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None

    @field_validator("content")
    @classmethod
    def _text_only(cls, value: str | list[dict[str, Any]] | None) -> str | None:
        return None if value is None else _join_text_parts(value)

    @model_validator(mode="after")
    def _fields_fit_the_role(self) -> ChatMessage:
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only an assistant message carries tool_calls")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a {self.role} message needs content")
        return self

    def as_template_message(self) -> dict[str, Any]:
        # Chat templates know "system"; "developer" is OpenAI's newer name for it.
        # An assistant turn of only tool_calls gets "" as content, as vLLM gives it:
        # templates that know no tools concatenate the content and fail on a missing one.
        out: dict[str, Any] = {
            "role": "system" if self.role == "developer" else self.role,
            "content": str(self.content or ""),
        }
        if self.name is not None:
            out["name"] = self.name
        if self.tool_calls:
            out["tool_calls"] = [c.model_dump() for c in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


class FunctionDef(BaseModel):
    model_config = STRICT
    name: FunctionName
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema
    strict: bool | None = None


class ToolDef(BaseModel):
    model_config = STRICT
    type: Literal["function"]
    function: FunctionDef

    def template_entry(self) -> dict[str, Any]:
        """What chat templates iterate over: transformers passes OpenAI's shape."""
        return {"type": "function", "function": self.function.model_dump(exclude_none=True)}


class NamedFunction(BaseModel):
    model_config = STRICT
    name: FunctionName


class NamedToolChoice(BaseModel):
    model_config = STRICT
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    name: Annotated[str, Field(min_length=1, max_length=64)]
    description: str | None = None
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = STRICT
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_iff_json_schema(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError('json_schema is given exactly when type is "json_schema"')
        return self
