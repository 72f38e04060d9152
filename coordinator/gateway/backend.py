"""The seam between the HTTP API and whatever generates tokens.

The gateway only ever talks to a `Backend`: the real one (`ClusterBackend`)
drives a chain of nodes over gRPC; tests plug in a scripted one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from parallax.errors import ParallaxError
from parallax.failures import FailureKind
from parallax.sampling import SamplingParams

FINISH_REASONS = ("stop", "length")


class UpstreamError(ParallaxError):
    """The cluster failed a request it had accepted (node down, stalled): HTTP 503."""


@dataclass(frozen=True)
class Failure:
    """Why a request ended without finishing: the kind decides replays and the HTTP
    status; the message is for people."""

    kind: FailureKind
    message: str
    hop: str = ""  # unreachable: the address of the hop that could not be reached


class RequestFailed(UpstreamError):
    """A request failed for good (no replay left or none possible)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(f"generation failed on the cluster ({failure.kind}): {failure.message}")
        self.failure = failure


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    prompt_ids: tuple[int, ...]
    sampling: SamplingParams
    client: str = ""  # who asked (an API key's name): admission is fair across clients


@dataclass(frozen=True)
class TokenOut:
    """One generated token. The last one of a request has `finished` set, and either a
    `finish_reason` ("stop" or "length") or a `failure`, which carries no token."""

    token_id: int
    logprob: float | None = None
    top_logprobs: tuple[tuple[int, float], ...] = ()
    finished: bool = False
    finish_reason: str | None = None
    failure: Failure | None = None

    def __post_init__(self) -> None:
        if self.finish_reason is not None and self.finish_reason not in FINISH_REASONS:
            raise ValueError(f"finish_reason {self.finish_reason!r} not in {FINISH_REASONS}")
        if self.failure is not None and self.finish_reason is not None:
            raise ValueError("a failed request has no finish_reason")
        if self.finished != (self.finish_reason is not None or self.failure is not None):
            raise ValueError("a finished token needs a finish_reason or a failure, and only it")

    @classmethod
    def failed(cls, kind: FailureKind, message: str, hop: str = "") -> TokenOut:
        return cls(0, finished=True, failure=Failure(kind, message, hop))

    @property
    def carries_token(self) -> bool:
        return self.failure is None


class Backend(Protocol):
    def generate(self, req: GenerationRequest) -> AsyncIterator[TokenOut]:
        """Stream the tokens of one request.

        Raises NotCovered / CapacityError / InvalidArgument before the first token
        when the request cannot start. Closing or cancelling the iterator aborts
        the request on every node that holds state for it.
        """
        ...

    def check_ready(self) -> None:
        """Raise NotCovered (HTTP 503) or CapacityError (HTTP 429) when a request cannot run."""
        ...
