"""OpenAI response shapes: chat and text completions, whole and streamed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from coordinator.gateway.context import SYSTEM_FINGERPRINT
from coordinator.gateway.textstream import LogprobEntry
from coordinator.gateway.token_text import TokenTexts


@dataclass(frozen=True)
class Envelope:
    """Fields every response and chunk of one request repeats."""

    id: str
    object: str
    created: int
    model: str

    def wrap(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
            **extra,
        }


def chat_logprobs(entries: Sequence[LogprobEntry], texts: TokenTexts) -> dict[str, Any]:
    def one(token_id: int, logprob: float) -> dict[str, Any]:
        piece = texts.piece(token_id)
        return {"token": piece.text, "logprob": logprob, "bytes": list(piece.bytes)}

    content = [
        {**one(e.token_id, e.logprob), "top_logprobs": [one(t, lp) for t, lp in e.top]}
        for e in entries
    ]
    return {"content": content, "refusal": None}


def completion_logprobs(entries: Sequence[LogprobEntry], texts: TokenTexts) -> dict[str, Any]:
    """The legacy completions layout: parallel lists."""
    return {
        "tokens": [texts.piece(e.token_id).text for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{texts.piece(t).text: lp for t, lp in e.top} for e in entries],
        "text_offset": [e.text_offset for e in entries],
    }


def chat_choice(
    index: int, text: str, finish_reason: str | None, logprobs: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "index": index,
        "message": {"role": "assistant", "content": text, "refusal": None},
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


def completion_choice(
    index: int, text: str, finish_reason: str | None, logprobs: dict[str, Any] | None
) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}
