"""Streaming detokenization: text pieces as tokens arrive, never half a character.

A byte-level token can hold part of a UTF-8 character, and SentencePiece
decoders drop a leading space depending on what came before, so decoding each
token alone is wrong. We decode a short window of recent ids twice (without
and with the new ones) and emit the difference, holding it back while it ends
in U+FFFD, the mark of an incomplete character.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

_REPLACEMENT = "\ufffd"
_CONTEXT = 6  # prompt ids kept as context: enough for any decoder's lookbehind
_TRIM_AT = 64  # drop ids that can no longer affect output once this many pile up


class _Decoder(Protocol):
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str: ...


class IncrementalDetokenizer:
    """Feed ids with `add`, get newly completed text; `flush` at the end.

    The concatenation of every piece equals `tokenizer.decode(generated_ids)`.
    """

    def __init__(
        self,
        tokenizer: _Decoder,
        prompt_ids: Sequence[int] = (),
        skip_special_tokens: bool = True,
    ) -> None:
        self._tok = tokenizer
        self._skip = skip_special_tokens
        self._ids: list[int] = [int(i) for i in list(prompt_ids)[-_CONTEXT:]]
        # [_prefix, _read) is text already emitted, used only as decoding context.
        self._prefix = 0
        self._read = len(self._ids)

    def add(self, token_id: int) -> str:
        self._ids.append(int(token_id))
        return self._advance(final=False)

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character decodes as U+FFFD)."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        if self._read == len(self._ids):
            return ""
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if not final and (len(after) <= len(before) or after.endswith(_REPLACEMENT)):
            return ""
        piece = after[len(before) :]
        self._prefix, self._read = self._read, len(self._ids)
        if self._prefix >= _TRIM_AT:
            del self._ids[: self._prefix]
            self._read -= self._prefix
            self._prefix = 0
        return piece

    def _decode(self, ids: Sequence[int]) -> str:
        if not ids:
            return ""
        return self._tok.decode(ids, skip_special_tokens=self._skip)
