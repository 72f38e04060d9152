"""The seam between the HTTP API and whatever generates tokens.

The gateway only ever talks to a `Backend`: the real one (`ClusterBackend`)
drives a chain of nodes over gRPC; tests plug in a scripted one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from parallax.errors import ParallaxError
from parallax.sampling import SamplingParams

FINISH_REASONS = ("stop", "length", "abort", "error")


class UpstreamError(ParallaxError):
    """The cluster failed a request it had accepted (node down, stalled): HTTP 503."""


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    prompt_ids: tuple[int, ...]
    sampling: SamplingParams


@dataclass(frozen=True)
class TokenOut:
    """One generated token. The last one of a request has `finished` set.

    A finish with reason "abort" or "error" carries no real token: `token_id`
    is meaningless there and `error` says what happened.
    """

    token_id: int
    logprob: float | None = None
    top_logprobs: tuple[tuple[int, float], ...] = ()
    finished: bool = False
    finish_reason: str | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if self.finish_reason is not None and self.finish_reason not in FINISH_REASONS:
            raise ValueError(f"finish_reason {self.finish_reason!r} not in {FINISH_REASONS}")
        if self.finished != (self.finish_reason is not None):
            raise ValueError("a finished token needs a finish_reason, and only a finished one")

    @property
    def carries_token(self) -> bool:
        return self.finish_reason not in ("abort", "error")


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
