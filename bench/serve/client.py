"""One benchmark request: a streamed chat completion, timed chunk by chunk."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bench.serve.datasets import SampleRequest
from bench.serve.metrics import RequestOutcome

CHAT_PATH = "/v1/chat/completions"
ERROR_TEXT_CHARS = 200


@dataclass(frozen=True)
class Target:
    """Where and how requests go."""

    base_url: str  # without /v1
    api_key: str
    model: str
    ignore_eos: bool
    timeout_s: float  # deadline of one whole request, stream included

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def body(self, sample: SampleRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": sample.prompt}],
            "max_tokens": sample.output_len,
            "temperature": 0.0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.ignore_eos:
            body["ignore_eos"] = True
        return body


async def send_request(
    client: httpx.AsyncClient, target: Target, sample: SampleRequest
) -> RequestOutcome:
    """Never raises for a failed request: the failure is the outcome."""
    start = time.perf_counter()
    try:
        async with asyncio.timeout(target.timeout_s):
            return await _stream(client, target, sample, start)
    except TimeoutError:
        return _failed(sample, start, "timeout", f"no answer within {target.timeout_s} s")
    except (httpx.HTTPError, ValueError) as e:
        return _failed(sample, start, "transport", f"{type(e).__name__}: {e}")


async def _stream(
    client: httpx.AsyncClient, target: Target, sample: SampleRequest, start: float
) -> RequestOutcome:
    url = target.base_url + CHAT_PATH
    req = client.stream("POST", url, json=target.body(sample), headers=target.headers())
    async with req as resp:
        if resp.status_code != 200:
            text = (await resp.aread()).decode("utf-8", "replace")
            retry = _seconds(resp.headers.get("retry-after")) if resp.status_code == 429 else None
            return _failed(sample, start, str(resp.status_code), _message(text), retry)
        ttft = 0.0
        last = start
        gaps: list[float] = []
        chunks = 0
        usage_tokens: int | None = None
        async for line in resp.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[len("data:") :].strip()
            now = time.perf_counter()
            if data == "[DONE]":
                latency = now - start
                tokens = usage_tokens if usage_tokens is not None else chunks
                return RequestOutcome(
                    ok=True,
                    prompt_len=sample.prompt_len,
                    output_len=tokens,
                    ttft_s=ttft if chunks else latency,
                    itl_s=tuple(gaps),
                    latency_s=latency,
                )
            event = json.loads(data)
            if "error" in event:
                return _failed(sample, start, "stream_error", _message(data))
            usage = event.get("usage")
            if usage:
                usage_tokens = int(usage.get("completion_tokens", 0))
            # The opening chunk only names the role: the first token is the first content.
            if any((c.get("delta") or {}).get("content") for c in event.get("choices") or ()):
                if chunks == 0:
                    ttft = now - start
                else:
                    gaps.append(now - last)
                last = now
                chunks += 1
    return _failed(sample, start, "stream_error", "the stream ended without [DONE]")


def _failed(
    sample: SampleRequest, start: float, status: str, error: str, retry: float | None = None
) -> RequestOutcome:
    return RequestOutcome(
        ok=False,
        prompt_len=sample.prompt_len,
        latency_s=time.perf_counter() - start,
        status=status,
        retry_after_s=retry,
        error=f"{status}: {error}"[:ERROR_TEXT_CHARS],
    )


def _message(text: str) -> str:
    """The OpenAI-style error message of a body, else the body."""
    try:
        err = json.loads(text).get("error")
        return str(err.get("message", err)) if isinstance(err, dict) else str(err or text)
    except (ValueError, AttributeError):
        return text


def _seconds(value: str | None) -> float | None:
    """Retry-After in seconds; None if absent or an HTTP date."""
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
