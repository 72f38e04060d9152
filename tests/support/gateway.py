"""Test doubles for the gateway: a scripted Backend and a uvicorn server in a thread.

The backend fakes the cluster at the `Backend` seam: every request "generates"
the token ids of a fixed text from the real tokenizer, so formats, streaming,
UTF-8 splitting and stop strings are exercised on real token boundaries.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import uvicorn

from coordinator.gateway.app import create_app
from coordinator.gateway.backend import GenerationRequest, TokenOut
from parallax.config.coordinator import CoordinatorConfig
from parallax.failures import FailureKind
from parallax.tokenizer.tokenizer import Tokenizer

SCRIPT_TEXT = "Hello, café — 日本語 🙂 done."


@dataclass
class ScriptedBackend:
    tokenizer: Tokenizer
    script: tuple[int, ...] = ()
    token_delay_s: float = 0.0
    hang_after_script: bool = False  # never finish: for disconnect tests
    ready_error: Exception | None = None  # raised by check_ready
    start_error: Exception | None = None  # raised by generate before any token
    fail_after: int | None = None  # finish with "error" after this many tokens
    requests: list[GenerationRequest] = field(default_factory=list)
    closed_early: set[str] = field(default_factory=set)  # iterators closed before the end
    completed: set[str] = field(default_factory=set)
    closed_event: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if not self.script:
            self.script = tuple(self.tokenizer.encode(SCRIPT_TEXT))

    def check_ready(self) -> None:
        if self.ready_error is not None:
            raise self.ready_error

    def tokens_for(self, req: GenerationRequest) -> list[int]:
        """What a request yields: the script, cut at max_tokens, plus EOS if it fits."""
        ids = list(self.script[: req.sampling.max_tokens])
        if len(ids) < req.sampling.max_tokens:
            ids.append(self.tokenizer.eos_token_ids[0])
        return ids

    async def generate(self, req: GenerationRequest) -> AsyncIterator[TokenOut]:
        self.requests.append(req)
        if self.start_error is not None:
            raise self.start_error
        ids = self.tokens_for(req)
        finished_ok = False
        try:
            for k, tok in enumerate(ids):
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
                if self.fail_after is not None and k == self.fail_after:
                    finished_ok = True
                    yield TokenOut.failed(FailureKind.UNREACHABLE, "node died")
                    return
                last = k == len(ids) - 1 and not self.hang_after_script
                reason = None
                if last:
                    reason = "length" if len(ids) == req.sampling.max_tokens else "stop"
                    if tok in self.tokenizer.eos_token_ids:
                        reason = "stop"
                # Set before the yield: the consumer may close us right after the last token.
                finished_ok = last
                yield self._token(req, k, tok, reason)
                if last:
                    return
            await asyncio.Event().wait()  # hang: only a close ends this request
        finally:
            (self.completed if finished_ok else self.closed_early).add(req.request_id)
            if not finished_ok:
                self.closed_event.set()

    def _token(self, req: GenerationRequest, k: int, tok: int, reason: str | None) -> TokenOut:
        n_top = req.sampling.logprobs
        logprob = -0.25 * (k + 1) if n_top >= 0 else None
        top = tuple((tok + j, -0.25 * (k + 1) - j) for j in range(max(n_top, 0)))
        return TokenOut(tok, logprob, top, reason is not None, reason)


class ServerThread:
    """A real uvicorn server on an ephemeral 127.0.0.1 port, run in a thread."""

    def __init__(self, app: object) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._sock = sock
        config = uvicorn.Config(app, log_level="warning", lifespan="off")  # type: ignore[arg-type]
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        self._server.run(sockets=[self._sock])

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()


MODEL_ID = "smollm2-135m"
TEST_CONTEXT = 512


@dataclass
class RunningGateway:
    backend: ScriptedBackend
    server: ServerThread

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def client(self, api_key: str = "unused", **kwargs: object) -> object:
        import openai

        # No retries: a 429/503 must surface as the error, not be retried away.
        return openai.OpenAI(
            api_key=api_key, base_url=self.base_url + "/v1", max_retries=0, **kwargs
        )


def load_tokenizer(gguf_path: object) -> Tokenizer:
    """The real SmolLM2 tokenizer: byte-level BPE with multi-token characters."""
    return Tokenizer.from_gguf(gguf_path)  # type: ignore[arg-type]


@contextmanager
def running_gateway(
    tokenizer: Tokenizer,
    backend: ScriptedBackend | None = None,
    api_keys: tuple[str, ...] = (),
    context_length: int = TEST_CONTEXT,
) -> Iterator[RunningGateway]:
    backend = backend or ScriptedBackend(tokenizer)
    config = CoordinatorConfig(api_key=api_keys)
    app = create_app(backend, config, tokenizer, MODEL_ID, context_length)
    with ServerThread(app) as server:
        yield RunningGateway(backend, server)
