"""How `/v1/chat/completions` spells its choices, tool calls included.

With tools offered (and `tool_choice` not "none"), each choice's text goes
through a `ToolCallParser`: calls leave the content and become `tool_calls`, the
finish reason "stop" becomes "tool_calls". Streamed, each call is one delta
holding its id, name and whole arguments; text the parser still holds back (it
may open a call) goes out as an empty delta, and what is left at the end rides
on the finish chunk. The parser's output does not depend on chunking, so the
deltas assemble into exactly the non-streamed message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from coordinator.gateway.generation import ChoiceResult
from coordinator.gateway.textstream import LogprobEntry, Piece, TokenTexts
from coordinator.gateway.tools import Parsed, ToolCall, ToolCallParser, parse_tool_calls


def chat_logprobs(entries: Sequence[LogprobEntry], texts: TokenTexts) -> dict[str, Any]:
    def one(token_id: int, logprob: float) -> dict[str, Any]:
        piece = texts.piece(token_id)
        return {"token": piece.text, "logprob": logprob, "bytes": list(piece.bytes)}

    content = [
        {**one(e.token_id, e.logprob), "top_logprobs": [one(t, lp) for t, lp in e.top]}
        for e in entries
    ]
    return {"content": content, "refusal": None}


def chat_message(content: str | None, calls: Sequence[ToolCall] = ()) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if calls:
        message["tool_calls"] = [c.message_entry() for c in calls]
    return message


def chat_choice(
    index: int,
    message: dict[str, Any],
    finish_reason: str | None,
    logprobs: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "index": index,
        "message": message,
        "logprobs": logprobs,
        "finish_reason": finish_reason,
    }


def chat_delta(
    index: int,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}


def _parsed_delta(parsed: Parsed) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if parsed.content:
        delta["content"] = parsed.content
    if parsed.calls:
        delta["tool_calls"] = [c.delta_entry() for c in parsed.calls]
    return delta


def _finish_reason(reason: str | None, saw_calls: bool) -> str | None:
    return "tool_calls" if saw_calls and reason == "stop" else reason


class ChatFormat:
    def __init__(
        self,
        texts: TokenTexts,
        with_logprobs: bool,
        parse_tools: bool = False,
        parallel_tool_calls: bool = True,
    ) -> None:
        self._texts = texts
        self._with_logprobs = with_logprobs
        self._parse_tools = parse_tools
        self._parallel = parallel_tool_calls
        self._parsers: dict[int, ToolCallParser] = {}  # per choice index, while streaming

    def _logprobs(self, piece_logprobs: Any) -> dict[str, Any] | None:
        return chat_logprobs(piece_logprobs, self._texts) if self._with_logprobs else None

    def _parser(self, index: int) -> ToolCallParser:
        if index not in self._parsers:
            self._parsers[index] = ToolCallParser(self._parallel)
        return self._parsers[index]

    def opening(self, index: int) -> dict[str, Any]:
        return chat_delta(index, {"role": "assistant", "content": ""})

    def delta(self, index: int, piece: Piece) -> dict[str, Any]:
        logprobs = self._logprobs(piece.logprobs)
        if not self._parse_tools:
            return chat_delta(index, {"content": piece.text}, None, logprobs)
        return chat_delta(
            index, _parsed_delta(self._parser(index).feed(piece.text)), None, logprobs
        )

    def finish(self, index: int, finish_reason: str) -> dict[str, Any]:
        if not self._parse_tools:
            return chat_delta(index, {}, finish_reason)
        parser = self._parser(index)
        delta = _parsed_delta(parser.finish())
        return chat_delta(index, delta, _finish_reason(finish_reason, parser.saw_calls))

    def whole(self, index: int, result: ChoiceResult) -> dict[str, Any]:
        text = "".join(result.text)
        logprobs = self._logprobs(result.logprobs)
        if not self._parse_tools:
            return chat_choice(index, chat_message(text), result.finish_reason, logprobs)
        content, calls = parse_tool_calls(text, self._parallel)
        message = chat_message(content or None if calls else content, calls)
        return chat_choice(
            index, message, _finish_reason(result.finish_reason, bool(calls)), logprobs
        )
