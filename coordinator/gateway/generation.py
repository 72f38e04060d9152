"""One HTTP request's choices: plans in, text pieces out, usage counted.

Shared by chat and text completions; `GatewayContext` is what every route of
one app shares, built once by `create_app`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from fastapi import Request

from coordinator.gateway.backend import Backend, Failure, GenerationRequest, RequestFailed
from coordinator.gateway.fanout import choices
from coordinator.gateway.tasks import TaskKeeper
from coordinator.gateway.textstream import ChoiceStream, LogprobEntry, Piece, TokenTexts
from parallax.failures import FailureKind
from parallax.sampling import SamplingParams
from parallax.tokenizer.detok import IncrementalDetokenizer
from parallax.tokenizer.tokenizer import Tokenizer

SYSTEM_FINGERPRINT = "parallax-0.1.0"


@dataclass(frozen=True)
class GatewayContext:
    backend: Backend
    tokenizer: Tokenizer
    model_id: str
    context_length: int
    api_keys: tuple[str, ...]
    texts: TokenTexts
    keeper: TaskKeeper = field(default_factory=TaskKeeper)
    started: int = field(default_factory=lambda: int(time.time()))

    def detokenizer(self, prompt_ids: Sequence[int]) -> IncrementalDetokenizer:
        return IncrementalDetokenizer(self.tokenizer, prompt_ids)

    def end_token_ids(self, sampling: SamplingParams) -> frozenset[int]:
        """Ids that end generation and so never show in the output text."""
        return frozenset((*self.tokenizer.eos_token_ids, *sampling.stop_token_ids))


T = TypeVar("T")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


@dataclass(frozen=True)
class ChoicePlan:
    index: int
    prompt_index: int  # which prompt: usage counts each prompt once, not once per choice
    prompt_ids: tuple[int, ...]
    sampling: SamplingParams


@dataclass
class ChoiceResult:
    text: list[str] = field(default_factory=list)
    logprobs: list[LogprobEntry] = field(default_factory=list)
    finish_reason: str | None = None


class Generation:
    def __init__(
        self,
        gw: GatewayContext,
        http_id: str,
        plans: list[ChoicePlan],
        stops: tuple[str, ...],
        client: str = "",
    ) -> None:
        self._plans = plans
        self._streams = [
            ChoiceStream(gw.detokenizer(p.prompt_ids), stops, gw.end_token_ids(p.sampling))
            for p in plans
        ]
        requests = [
            GenerationRequest(f"{http_id}-{p.index}", p.prompt_ids, p.sampling, client)
            for p in plans
        ]
        self._choices = choices(gw.backend, requests, gw.keeper)

    async def start(self) -> None:
        """Raises the typed error of a request that could not start (-> HTTP status)."""
        await self._choices.start()

    def close(self) -> None:
        self._choices.close()

    async def pieces(self) -> AsyncIterator[tuple[int, Piece]]:
        async for ev in self._choices.events():
            if ev.error is not None or ev.token is None:
                failure = Failure(FailureKind.INTERNAL, f"{type(ev.error).__name__}: {ev.error}")
                yield ev.index, Piece("", failure=failure)
                continue
            piece = self._streams[ev.index].add(ev.token)
            if piece.finish_reason is not None and not ev.token.finished:
                self._choices.stop(ev.index)  # a stop string: abort upstream now
            yield ev.index, piece

    async def collect(self) -> list[ChoiceResult]:
        results = [ChoiceResult() for _ in self._plans]
        async for index, piece in self.pieces():
            if piece.failure is not None:
                raise RequestFailed(piece.failure)
            result = results[index]
            result.text.append(piece.text)
            result.logprobs.extend(piece.logprobs)
            result.finish_reason = piece.finish_reason or result.finish_reason
        return results

    def usage(self) -> dict[str, int]:
        prompts = {p.prompt_index: len(p.prompt_ids) for p in self._plans}
        prompt_tokens = sum(prompts.values())
        completion = sum(s.completion_tokens for s in self._streams)
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        }


def client_of(request: Request) -> str:
    """Who is asking, for fair admission: a digest of the API key (the key itself is
    never kept), or "" when the gateway takes requests without keys."""
    auth = request.headers.get("authorization", "")
    if not auth:
        return ""
    return hashlib.sha256(auth.encode()).hexdigest()[:16]


async def until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T | None:
    """Run `work`; cancel it and return None if the client hangs up first.

    Non-streaming responses need this: nothing else notices a client that left
    while its completion is still being generated.
    """
    job = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(until_disconnected(request))
    try:
        await asyncio.wait({job, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not job.done():
            job.cancel()
    return job.result() if job.done() and not job.cancelled() else None
