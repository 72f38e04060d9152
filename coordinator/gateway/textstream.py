"""One choice's tokens -> text pieces: stop strings, detokenization, logprob alignment.

Text is released only when it is final: never inside a UTF-8 character (the
incremental detokenizer holds partial bytes back) and never a possible
beginning of a stop string (`StopMatcher` holds it back). `TokenTexts` spells
single tokens for logprobs: a byte-level BPE token can be part of a UTF-8
character; its exact bytes come from the vocabulary string and its text is then
written the way OpenAI does, `bytes:\\xe6\\x97`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from coordinator.gateway.backend import Failure, TokenOut
from parallax.tokenizer.tokenizer import Tokenizer


@dataclass(frozen=True)
class StopCheck:
    text: str  # safe to emit now
    stopped: bool  # a stop string matched; `text` ends right before it


class StopMatcher:
    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self._done = False

    @property
    def has_stops(self) -> bool:
        return bool(self._stops)

    def feed(self, text: str) -> StopCheck:
        if self._done:
            return StopCheck("", True)
        if not self._stops:
            return StopCheck(text, False)
        buf = self._held + text
        # Everything before `self._held` was released only because no stop could
        # start there, so the earliest match is always inside `buf`.
        hits = [i for i in (buf.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._done = True
            self._held = ""
            return StopCheck(buf[: min(hits)], True)
        keep = self._partial_suffix(buf)
        self._held = buf[len(buf) - keep :]
        return StopCheck(buf[: len(buf) - keep], False)

    def flush(self) -> str:
        """The held-back text, once generation ended without a stop string."""
        out, self._held = self._held, ""
        return "" if self._done else out

    def _partial_suffix(self, buf: str) -> int:
        """Length of the longest suffix of `buf` that is a proper prefix of a stop string."""
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(buf)), best, -1):
                if buf.endswith(stop[:n]):
                    best = n
                    break
        return best


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


class Detokenizer(Protocol):
    def add(self, token_id: int) -> str: ...

    def flush(self) -> str: ...


@dataclass(frozen=True)
class LogprobEntry:
    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...]
    text_offset: int  # where the token's text starts in the choice's output


@dataclass(frozen=True)
class Piece:
    """Text to emit now. The last piece of a choice has `finish_reason` set."""

    text: str
    logprobs: tuple[LogprobEntry, ...] = ()
    finish_reason: str | None = None  # "stop" | "length"
    failure: Failure | None = None  # the choice failed: the last piece, no text


class ChoiceStream:
    def __init__(
        self, detokenizer: Detokenizer, stops: tuple[str, ...], stop_token_ids: frozenset[int]
    ) -> None:
        self._detok = detokenizer
        self._matcher = StopMatcher(stops)
        self._stop_token_ids = stop_token_ids
        self._produced = 0  # chars out of the detokenizer
        self._released = 0  # chars handed to the client
        self._pending: list[LogprobEntry] = []
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        self._cut_by_stop_string = False
        self.failed = False

    @property
    def done(self) -> bool:
        return self.finish_reason is not None or self.failed

    def add(self, token: TokenOut) -> Piece:
        if self.done:
            return Piece("")
        if token.failure is not None:
            self.failed = True
            return Piece("", failure=token.failure)
        self.completion_tokens += 1
        start = self._produced
        text = ""
        # The EOS or stop token that ended generation is not part of the output.
        ends_on_it = token.finish_reason == "stop" and token.token_id in self._stop_token_ids
        if not ends_on_it:
            text = self._detok.add(token.token_id)
        if token.finished:
            text += self._detok.flush()
        self._produced += len(text)
        if token.logprob is not None and not ends_on_it:
            self._pending.append(
                LogprobEntry(token.token_id, token.logprob, token.top_logprobs, start)
            )
        check = self._matcher.feed(text)
        out = check.text
        if check.stopped:
            self.finish_reason = "stop"
            self._cut_by_stop_string = True
        elif token.finished:
            out += self._matcher.flush()
            self.finish_reason = token.finish_reason
        self._released += len(out)
        return Piece(out, self._take_logprobs(), self.finish_reason)

    def _take_logprobs(self) -> tuple[LogprobEntry, ...]:
        """Entries of tokens whose text went out (or all, when no stop string can cut)."""
        if not self._matcher.has_stops or (self.done and not self._cut_by_stop_string):
            ready, self._pending = self._pending, []
            return tuple(ready)
        ready = [e for e in self._pending if e.text_offset < self._released]
        # After a stop string, the tokens that spelled it are not reported.
        self._pending = [] if self.done else self._pending[len(ready) :]
        return tuple(ready)
