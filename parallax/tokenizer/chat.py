"""Chat templates: validate OpenAI-style messages and render them like transformers.

Templates ship with model files we did not write, so they run in jinja2's
immutable sandbox with the same environment transformers gives them
(`trim_blocks`, `lstrip_blocks`, `raise_exception`, a non-escaping `tojson`,
`strftime_now`), which makes our prompt text identical to theirs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jinja2
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from parallax.errors import InvalidArgument, ModelFormatError


class _TemplateRejected(Exception):
    """Raised by a template's `raise_exception(...)`: the conversation is not one it accepts."""


class _GenerationTag(Extension):
    """`{% generation %}...{% endgeneration %}` marks assistant text for training
    masks in transformers; for inference it renders its body unchanged."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller: Any) -> str:
        return caller()


def _raise_exception(message: str) -> None:
    raise _TemplateRejected(message)


def _tojson(
    x: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys=False
) -> str:
    # jinja's own tojson HTML-escapes; templates expect plain JSON.
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@dataclass(frozen=True)
class ChatTemplate:
    """A compiled chat template and the special-token strings it may reference."""

    source: str
    special_tokens: Mapping[str, str] = field(default_factory=dict)  # bos_token -> "<s>" ...
    _compiled: jinja2.Template = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, loopcontrols]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            compiled = env.from_string(self.source)
        except jinja2.TemplateSyntaxError as e:
            raise ModelFormatError(
                f"the model's chat template is not valid jinja (line {e.lineno}: {e.message}); "
                "fix chat_template in the model files"
            ) from e
        object.__setattr__(self, "_compiled", compiled)

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
        **extra: Any,
    ) -> str:
        """The prompt text for `messages`, offering `tools` (OpenAI's
        `{"type": "function", "function": {...}}` entries) to a template that
        renders them; `extra` are further template variables (vLLM's
        `chat_template_kwargs`, such as Qwen3's `enable_thinking`). Raises
        `InvalidArgument` when the messages are malformed or the template rejects
        the conversation."""
        plain = normalize_messages(messages)
        context = {
            **self.special_tokens,
            "documents": None,
            **extra,
            # templates test `tools is not none`: undefined would pass
            "tools": [dict(t) for t in tools] if tools else None,
            "messages": plain,
            "add_generation_prompt": bool(add_generation_prompt),
        }
        try:
            return self._compiled.render(**context)
        except _TemplateRejected as e:
            raise InvalidArgument(
                f"the model's chat template rejected the conversation: {e}"
            ) from e
        except jinja2.TemplateError as e:
            raise InvalidArgument(
                f"the model's chat template failed on these messages ({type(e).__name__}: {e}); "
                "check the roles and fields of each message"
            ) from e


def normalize_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Plain-dict copies of OpenAI-style messages, with list-of-parts content joined
    into one string and None-valued fields dropped (templates expect them absent).
    The JSON-text `arguments` of an assistant's `tool_calls` become objects, as
    templates write them with `tojson` (vLLM and transformers' examples do the same)."""
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise InvalidArgument("messages must be a list of {'role': ..., 'content': ...} objects")
    if not messages:
        raise InvalidArgument("messages is empty; send at least one message")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise InvalidArgument(f"messages[{i}] must be an object with 'role' and 'content'")
        role = m.get("role")
        if not isinstance(role, str) or not role:
            raise InvalidArgument(f"messages[{i}] needs a string 'role' (system, user, assistant)")
        plain = {str(k): v for k, v in m.items() if v is not None}
        if "content" in plain:
            plain["content"] = _content_text(plain["content"], i)
        elif role != "assistant":  # an assistant turn may carry only tool_calls
            raise InvalidArgument(f"messages[{i}] ({role}) has no 'content'")
        if "tool_calls" in plain:
            plain["tool_calls"] = _tool_calls(plain["tool_calls"], i)
        out.append(plain)
    return out


def _tool_calls(calls: Any, i: int) -> list[Any]:
    if isinstance(calls, str | bytes) or not isinstance(calls, Sequence):
        raise InvalidArgument(f"messages[{i}].tool_calls must be a list of calls")
    out = []
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, Mapping) else None
        args = fn.get("arguments") if isinstance(fn, Mapping) else None
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError as e:
                raise InvalidArgument(
                    f"messages[{i}].tool_calls[{j}].function.arguments is not valid JSON ({e})"
                ) from None
            call = {**call, "function": {**fn, "arguments": args}}
        out.append(call)
    return out


def _content_text(content: Any, i: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, bytes):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text":
                raise InvalidArgument(
                    f"messages[{i}].content[{j}] must be {{'type': 'text', 'text': ...}}; "
                    "only text parts are supported"
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidArgument(f"messages[{i}].content[{j}].text must be a string")
            texts.append(text)
        return "\n".join(texts)
    raise InvalidArgument(
        f"messages[{i}].content must be a string or a list of text parts, "
        f"not {type(content).__name__}"
    )
