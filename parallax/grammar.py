"""Grammars for constrained decoding: what a request may generate, as it travels.

A `GrammarSpec` rides in `SamplingParams` (proto `Grammar`), so every replay of a
request carries it. The gateway checks it at the edge (`check_grammar`: a bad schema is
an HTTP 400) and the sampling hop compiles it against its own tokenizer
(node/grammar.py). Both use llguidance, a small Rust wheel without Python
dependencies, so the gateway stays torch-free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import llguidance as llg

from parallax.errors import InvalidArgument
from parallax.rpc import parallax_pb2 as pb

MAX_GRAMMAR_CHARS = 64 * 1024  # a schema larger than this is refused at the edge
GrammarKind = Literal["json_schema", "lark"]
KINDS: tuple[str, ...] = ("json_schema", "lark")
# JSON as `json.dumps` writes it: one space after ':' and ',', no other whitespace.
# Flexible whitespace lets a small model pad with newlines until max_tokens runs out.
JSON_OPTIONS: dict[str, Any] = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}
JSON_OBJECT_SCHEMA = '{"type": "object"}'


@dataclass(frozen=True)
class GrammarSpec:
    kind: GrammarKind
    text: str  # a JSON Schema (json_schema) or a Lark grammar in llguidance's dialect

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidArgument(f"grammar kind {self.kind!r} is not one of {list(KINDS)}")
        if not self.text:
            raise InvalidArgument("a grammar's text is empty: send a JSON schema or a grammar")
        if len(self.text) > MAX_GRAMMAR_CHARS:
            raise InvalidArgument(
                f"the grammar is {len(self.text)} characters, over {MAX_GRAMMAR_CHARS}: "
                "send a smaller schema"
            )

    @classmethod
    def json_schema(cls, schema: dict[str, Any] | None) -> GrammarSpec:
        """`schema` None: any JSON object (OpenAI's json_object mode)."""
        if schema is None:
            return cls("json_schema", JSON_OBJECT_SCHEMA)
        return cls("json_schema", json.dumps(schema, ensure_ascii=False))

    def engine_grammar(self) -> str:
        """The grammar in llguidance's own form; InvalidArgument if it cannot be read."""
        try:
            if self.kind == "json_schema":
                return llg.LLMatcher.grammar_from_json_schema(self.text, defaults=JSON_OPTIONS)
            return llg.LLMatcher.grammar_from_lark(self.text)
        except ValueError as e:
            raise InvalidArgument(f"the {self.kind} grammar is not valid JSON: {e}") from e

    def to_proto(self) -> pb.Grammar:
        return pb.Grammar(kind=self.kind, text=self.text)

    @classmethod
    def from_proto(cls, m: pb.Grammar) -> GrammarSpec | None:
        """None when the message is empty (unconstrained); InvalidArgument when malformed."""
        if not m.kind and not m.text:
            return None
        return cls(m.kind, m.text)  # type: ignore[arg-type]  # checked in __post_init__


def check_grammar(spec: GrammarSpec) -> None:
    """InvalidArgument naming the problem when the engine cannot compile `spec` (no
    tokenizer needed: the sampling hop compiles it again against its own)."""
    why = llg.LLMatcher.validate_grammar(spec.engine_grammar())
    if why:
        raise InvalidArgument(f"the {spec.kind} grammar cannot be used: {why}")


def tool_call_lark(
    calls: list[tuple[str, dict[str, Any]]], open_tag: str, close_tag: str, many: bool = False
) -> str:
    """A Lark grammar for one call of one of `calls` [(name, parameters schema)], or with
    `many` one or more: `{"name": NAME, "arguments": {...}}` between `open_tag` and
    `close_tag` (both may be empty: bare JSON calls joined by "; ", as Llama 3 writes
    them). The gateway's tool parser reads both forms back (coordinator/gateway/tools.py)."""
    options = []
    for name, params in calls:
        schema = {
            "type": "object",
            "properties": {"name": {"const": name}, "arguments": params or {"type": "object"}},
            "required": ["name", "arguments"],
            "additionalProperties": False,
            "x-guidance": JSON_OPTIONS,
        }
        options.append("%json " + json.dumps(schema, ensure_ascii=False))
    rules = [f"call_{i}: {o}" for i, o in enumerate(options)]
    body = " | ".join(f"call_{i}" for i in range(len(options)))
    head = f"{json.dumps(open_tag)} " if open_tag else ""
    tail = f" {json.dumps(close_tag)}" if close_tag else ""
    join = json.dumps("\n" if open_tag else "; ")
    start = f"start: call ({join} call)*" if many else "start: call"
    return "\n".join([start, f"call: {head}({body}){tail}", *rules])
