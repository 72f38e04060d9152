"""Structured outputs and forced tool calls: the grammar a chat request's answer must
follow, checked here at the edge (a bad schema is a 400) and enforced by the hop that
samples (node/grammar.py) through `SamplingParams.grammar`.

- `response_format` `json_object`: any JSON object; `json_schema`: its schema.
- `tool_choice` "required": one or more calls of offered tools (exactly one when
  `parallel_tool_calls` is false); a named function: exactly one call
  `{"name": ..., "arguments": {...}}` whose arguments follow the function's
  `parameters`; wrapped in `<tool_call>` tags where the model's chat template uses
  them (Hermes, Qwen), bare JSON otherwise (Llama 3). The tool parser
  (tools.py) reads both, so the answer carries `tool_calls`.
"""

from __future__ import annotations

from coordinator.gateway.errors import bad_request
from coordinator.gateway.messages import NamedToolChoice
from coordinator.gateway.schemas import ChatCompletionRequest
from coordinator.gateway.tools import CLOSE, OPEN
from parallax.errors import InvalidArgument
from parallax.grammar import GrammarSpec, check_grammar, tool_call_lark
from parallax.tokenizer import Tokenizer


def _hermes(tokenizer: Tokenizer) -> bool:
    """Whether the model writes its calls between `<tool_call>` tags."""
    template = tokenizer.chat_template
    return template is not None and OPEN in template.source


def forced_tool_grammar(body: ChatCompletionRequest, tokenizer: Tokenizer) -> GrammarSpec | None:
    choice = body.tool_choice
    if not body.tools or not (choice == "required" or isinstance(choice, NamedToolChoice)):
        return None
    tools = [t.function for t in body.tools]
    if isinstance(choice, NamedToolChoice):
        tools = [f for f in tools if f.name == choice.function.name]
    calls = [(f.name, f.parameters or {}) for f in tools]
    tags = (OPEN + "\n", "\n" + CLOSE) if _hermes(tokenizer) else ("", "")
    many = choice == "required" and body.parallel_tool_calls is not False
    return GrammarSpec("lark", tool_call_lark(calls, *tags, many=many))


def response_grammar(body: ChatCompletionRequest) -> GrammarSpec | None:
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object" or fmt.json_schema is None:
        return GrammarSpec.json_schema(None)
    return GrammarSpec.json_schema(fmt.json_schema.json_schema)


def request_grammar(body: ChatCompletionRequest, tokenizer: Tokenizer) -> GrammarSpec | None:
    """The grammar the answer must follow, or None; a 400 naming the field when the
    schema cannot be compiled or two fields would both constrain the answer."""
    try:
        tool = forced_tool_grammar(body, tokenizer)
    except InvalidArgument as e:
        raise bad_request(f"tools: {e}", param="tools") from None
    try:
        fmt = response_grammar(body)
    except InvalidArgument as e:
        raise bad_request(f"response_format: {e}", param="response_format") from None
    if tool is not None and fmt is not None:
        raise bad_request(
            "response_format and a forced tool_choice both constrain the answer: send one "
            "(tool_choice 'auto' lets the model choose between text and a call)",
            param="response_format",
        )
    spec, param = (tool, "tools") if tool is not None else (fmt, "response_format")
    if spec is None:
        return None
    try:
        check_grammar(spec)
    except InvalidArgument as e:
        raise bad_request(f"{param}: {e}", param=param) from None
    return spec
