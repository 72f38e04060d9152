"""One choice's tokens -> text pieces: detokenized, stop strings applied, logprobs aligned.

Text is released only when it is final: never inside a UTF-8 character (the
incremental detokenizer holds partial bytes back) and never a possible
beginning of a stop string (the stop matcher holds it back).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from coordinator.gateway.backend import TokenOut
from coordinator.gateway.stop import StopMatcher


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
    finish_reason: str | None = None  # "stop" | "length" | "error"
    error: str | None = None


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

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def add(self, token: TokenOut) -> Piece:
        if self.done:
            return Piece("")
        if not token.carries_token:
            self.finish_reason = "error"
            return Piece("", finish_reason="error", error=token.error or token.finish_reason)
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
