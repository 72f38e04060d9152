"""Tool calls parsed out of a model's text, incrementally and without the network.

Two spellings are understood, the ones open models are trained on:
- Hermes / Qwen: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, any
  number of blocks, with ordinary text around them;
- Llama 3 JSON: the whole answer is `{"name": ..., "parameters": {...}}` (several
  joined by `;`, or a JSON list of them), maybe after `<|python_tag|>`.

One state machine serves both streaming and whole responses: `parse_tool_calls`
is `feed(text)` plus `finish()`, and the machine's output does not depend on how
the text is chunked, so streamed deltas assemble into exactly the non-streamed
answer. Rules, in both modes:
- a block whose JSON is not a call stays in the content, verbatim;
- a block left open at the end counts if its JSON is a call (the model stopped on
  EOS instead of `</tool_call>`), and is content otherwise;
- whitespace between a call and the text beside it is dropped, except one gap
  (the whitespace before the calls, else after) where text is on both sides;
  text that touches no call is kept exactly as generated.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
PYTHON_TAG = "<|python_tag|>"
_JSON_STARTS = ("{", "[", PYTHON_TAG)


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class ToolCall:
    index: int  # position among this answer's calls
    id: str
    name: str
    arguments: str  # a JSON object, as text (OpenAI's spelling)

    def message_entry(self) -> dict[str, Any]:
        """The entry of `message.tool_calls` in a whole response."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }

    def delta_entry(self) -> dict[str, Any]:
        """The entry of `delta.tool_calls` in a stream: the whole call in one delta."""
        return {"index": self.index, **self.message_entry()}


@dataclass(frozen=True)
class Parsed:
    """What one `feed` or `finish` adds: content text and completed calls."""

    content: str = ""
    calls: tuple[ToolCall, ...] = ()


def call_fields(obj: Any) -> tuple[str, str] | None:
    """(name, arguments as JSON text) of a decoded call object, or None if it is not one."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    if set(obj) - {"name", "arguments", "parameters", "type"}:
        return None  # another JSON object, not a call
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):  # some models write the arguments as a JSON string
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    if not isinstance(args, dict):
        return None
    return obj["name"], json.dumps(args, ensure_ascii=False)


def _json_calls(text: str) -> list[tuple[str, str]] | None:
    """Llama 3 style: JSON call objects joined by `;`, or a list of them; None if not all calls."""
    text = text.strip().removeprefix(PYTHON_TAG).strip()
    decoder = json.JSONDecoder()
    objs: list[Any] = []
    pos = 0
    while pos < len(text):
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return None
        objs.extend(obj if isinstance(obj, list) else [obj])
        rest = text[pos:].lstrip()
        if rest.startswith(";"):
            rest = rest[1:].lstrip()
        elif rest:
            return None
        pos = len(text) - len(rest)
    fields = [call_fields(o) for o in objs]
    if not fields or any(f is None for f in fields):
        return None
    return [f for f in fields if f is not None]


def _block_call(inner: str) -> tuple[str, str] | None:
    try:
        return call_fields(json.loads(inner))
    except json.JSONDecodeError:
        return None


def _held_prefix(text: str, marker: str) -> int:
    """Length of the longest end of `text` that is a proper start of `marker`."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


class ToolCallParser:
    """Feed the generated text piece by piece; each call returns what became final."""

    def __init__(self, parallel: bool = True, new_id: Callable[[], str] = new_call_id) -> None:
        self._parallel = parallel  # False: calls after the first are dropped
        self._new_id = new_id
        self._mode = "start"  # start -> text | json; text <-> block
        self._buf = ""  # undecided text: a possible tag start, a block, or a JSON answer
        self._ws = ""  # whitespace held back: dropped if a call follows it
        self._after_call = False  # drop whitespace that follows a call
        self._gap = ""  # whitespace before the last run of calls
        self._right_ws = ""  # whitespace after it, so far
        self._has_content = False  # some non-whitespace content was emitted
        self._count = 0  # calls parsed (emitted or dropped)
        self._out: list[str] = []
        self._calls: list[ToolCall] = []
        self._finished = False

    @property
    def saw_calls(self) -> bool:
        return self._count > 0

    def feed(self, text: str) -> Parsed:
        if self._finished:
            raise RuntimeError("feed after finish")
        self._buf += text
        self._advance(final=False)
        return self._take()

    def finish(self) -> Parsed:
        if not self._finished:
            self._finished = True
            self._advance(final=True)
            self._finish_mode()
        return self._take()

    # ---- the machine ----
    def _advance(self, final: bool) -> None:
        while True:
            if self._mode == "start" and not self._decide_start(final):
                return
            if self._mode == "json":
                return  # a JSON answer is judged whole, at the end
            if self._mode == "text" and not self._scan_text(final):
                return
            if self._mode == "block" and not self._scan_block():
                return

    def _decide_start(self, final: bool) -> bool:
        stripped = self._buf.lstrip()
        self._ws += self._buf[: len(self._buf) - len(stripped)]
        self._buf = stripped
        if not stripped:
            return False
        if stripped.startswith(_JSON_STARTS):
            self._mode = "json"
        elif any(m.startswith(stripped) for m in (OPEN, PYTHON_TAG)) and not final:
            return False  # `<tool` or `<|pyth`: wait for more
        else:
            self._mode = "text"
        return True

    def _scan_text(self, final: bool) -> bool:
        at = self._buf.find(OPEN)
        if at < 0:
            keep = 0 if final else _held_prefix(self._buf, OPEN)
            self._text(self._buf[: len(self._buf) - keep])
            self._buf = self._buf[len(self._buf) - keep :]
            return False
        self._text(self._buf[:at])
        self._buf = self._buf[at + len(OPEN) :]
        self._mode = "block"
        return True

    def _scan_block(self) -> bool:
        at = self._buf.find(CLOSE)
        if at < 0:
            return False
        inner, self._buf = self._buf[:at], self._buf[at + len(CLOSE) :]
        self._mode = "text"
        fields = _block_call(inner)
        if fields is None:
            self._text(OPEN + inner + CLOSE)
        else:
            self._call(*fields)
        return True

    def _finish_mode(self) -> None:
        if self._mode == "json":
            calls = _json_calls(self._buf)
            if calls is None:
                self._text(self._buf)
            for fields in calls or ():
                self._call(*fields)
        elif self._mode == "block":
            fields = _block_call(self._buf)
            if fields is None:
                self._text(OPEN + self._buf)
            else:
                self._call(*fields)
        else:  # start (all whitespace, or a lone tag start) or text
            self._text(self._buf)
        self._buf = ""
        if not self._after_call:
            self._out.append(self._ws)  # text that ends the answer keeps its whitespace
        self._ws = ""

    def _text(self, text: str) -> None:
        """Content text; its trailing whitespace is held until we know what follows."""
        if self._after_call:
            stripped = text.lstrip()
            self._right_ws += text[: len(text) - len(stripped)]
            if not stripped:
                return
            text, self._after_call = stripped, False
            if self._has_content:  # text on both sides of the calls: keep one gap
                self._ws = self._gap or self._right_ws
            self._gap = self._right_ws = ""
        body = text.rstrip()
        if body:
            self._out.append(self._ws + body)
            self._ws, self._has_content = "", True
        self._ws += text[len(body) :]

    def _call(self, name: str, arguments: str) -> None:
        if not self._after_call:
            self._gap = self._ws  # the whitespace before a run of calls
        self._ws = ""
        self._after_call = True
        if self._parallel or self._count == 0:
            self._calls.append(ToolCall(self._count, self._new_id(), name, arguments))
        self._count += 1

    def _take(self) -> Parsed:
        out = Parsed("".join(self._out), tuple(self._calls))
        self._out, self._calls = [], []
        return out


def parse_tool_calls(
    text: str, parallel: bool = True, new_id: Callable[[], str] = new_call_id
) -> tuple[str, tuple[ToolCall, ...]]:
    """(content, calls) of a whole answer: the same as streaming it in any pieces."""
    parser = ToolCallParser(parallel, new_id)
    first, last = parser.feed(text), parser.finish()
    return first.content + last.content, first.calls + last.calls
