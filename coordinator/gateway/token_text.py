"""The text and bytes of single tokens, as OpenAI logprobs report them.

A byte-level BPE token can be part of a UTF-8 character: its exact bytes are
recovered from the vocabulary string, and its text is then spelled the way
OpenAI does for such tokens, `bytes:\\xe6\\x97`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from parallax.tokenizer.tokenizer import Tokenizer

_HEX_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's printable stand-ins for the 256 byte values, inverted."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    chars = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(keep, chars, strict=True)}


@dataclass(frozen=True)
class TokenPiece:
    text: str
    bytes: tuple[int, ...]


class TokenTexts:
    """Per-token text and bytes, cached (bounded by the vocabulary)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tok = tokenizer
        self._alphabet = _byte_level_alphabet()
        # Byte-level BPE spells a space as "Ġ" (U+0120); SentencePiece as U+2581.
        probe = "".join(tokenizer.id_to_token(i) for i in tokenizer.encode(" the"))
        self._byte_level = "\u0120" in probe
        self._cache: dict[int, TokenPiece] = {}

    def piece(self, token_id: int) -> TokenPiece:
        got = self._cache.get(token_id)
        if got is None:
            got = self._cache[token_id] = self._compute(token_id)
        return got

    def _compute(self, token_id: int) -> TokenPiece:
        raw = self._raw_bytes(token_id)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = "bytes:" + "".join(f"\\x{b:02x}" for b in raw)
        return TokenPiece(text, tuple(raw))

    def _raw_bytes(self, token_id: int) -> bytes:
        if not 0 <= token_id < self._tok.vocab_size:
            return b""
        vocab = self._tok.id_to_token(token_id)
        hex_byte = _HEX_BYTE.fullmatch(vocab)
        if hex_byte:  # SentencePiece byte fallback
            return bytes([int(hex_byte.group(1), 16)])
        if self._byte_level and all(c in self._alphabet for c in vocab):
            return bytes(self._alphabet[c] for c in vocab)
        # SentencePiece spells a leading space as U+2581; special tokens decode to ""
        return vocab.replace("\u2581", " ").encode("utf-8")
