"""Stop strings and text release, checked against a plain reference on random splits."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.gateway.backend import Failure, TokenOut
from coordinator.gateway.textstream import ChoiceStream, StopMatcher
from parallax.failures import FailureKind

ALPHABET = "ab日 "


def _reference(text: str, stops: list[str]) -> tuple[str, bool]:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


def _splits(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in zip(points, points[1:], strict=False)]


def _reference_per_piece(pieces: list[str], stops: list[str]) -> tuple[str, bool]:
    """Stop at the first piece after which the text holds a stop string, cut at its
    earliest match: what checking after every token means."""
    text = ""
    for piece in pieces:
        text += piece
        cut, stopped = _reference(text, stops)
        if stopped:
            return cut, True
    return text, False


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(ALPHABET, max_size=30),
    stops=st.lists(st.text(ALPHABET, min_size=1, max_size=4), max_size=4),
    cuts=st.lists(st.integers(0, 40), max_size=12),
)
def test_stop_matcher_equals_searching_the_text_after_each_piece(text, stops, cuts):
    matcher = StopMatcher(tuple(stops))
    pieces = _splits(text, cuts)
    out, stopped = "", False
    for piece in pieces:
        check = matcher.feed(piece)
        out += check.text
        if check.stopped:
            stopped = True
            break
        # What went out so far never contains a stop string.
        assert _reference(out, stops) == (out, False)
    if not stopped:
        out += matcher.flush()
    assert (out, stopped) == _reference_per_piece(pieces, stops)


def test_held_text_is_released_when_it_stops_matching():
    m = StopMatcher(("abc",))
    assert m.feed("xxab").text == "xx"
    assert m.feed("d").text == "abd"
    assert m.feed("ab").text == ""
    assert m.flush() == "ab"


class _CharDetok:
    """Each token id is one character: enough to test ChoiceStream's bookkeeping."""

    def add(self, token_id: int) -> str:
        return chr(token_id)

    def flush(self) -> str:
        return ""


def _run(text: str, stops: tuple[str, ...], eos: int = 0) -> tuple[str, str | None, list[int]]:
    stream = ChoiceStream(_CharDetok(), stops, frozenset({eos}))
    out, logprob_ids = "", []
    ids = [ord(c) for c in text] + [eos]
    for k, tok in enumerate(ids):
        last = k == len(ids) - 1
        piece = stream.add(TokenOut(tok, -1.0, (), last, "stop" if last else None))
        out += piece.text
        logprob_ids += [e.token_id for e in piece.logprobs]
        if stream.done:
            break
    return out, stream.finish_reason, logprob_ids


def test_choice_stream_hides_eos_and_cuts_at_stop_strings():
    assert _run("hello", ()) == ("hello", "stop", [ord(c) for c in "hello"])
    out, reason, ids = _run("hello world", ("o w",))
    assert (out, reason) == ("hell", "stop")
    assert ids == [ord(c) for c in "hell"]


def test_a_failure_carries_its_kind_and_message():
    stream = ChoiceStream(_CharDetok(), (), frozenset())
    piece = stream.add(TokenOut.failed(FailureKind.UNREACHABLE, "boom"))
    assert piece.finish_reason is None and piece.failure == Failure(FailureKind.UNREACHABLE, "boom")
    assert stream.done
    assert stream.completion_tokens == 0
