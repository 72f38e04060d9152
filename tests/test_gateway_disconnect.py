"""A client that goes away aborts its requests: the backend's iterators get closed."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.gateway import MODEL_ID, ScriptedBackend, running_gateway

BODY = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}]}


def _wait_closed(backend: ScriptedBackend, n: int, timeout: float = 5.0) -> None:
    assert backend.closed_event.wait(timeout), "the backend never saw the cancel"
    for _ in range(int(timeout / 0.05)):
        if len(backend.closed_early) >= n:
            return
        backend.closed_event.wait(0.05)
    raise AssertionError(f"only {len(backend.closed_early)} of {n} requests were aborted")


@pytest.mark.parametrize("n", [1, 2])
def test_closing_a_stream_aborts_every_choice(tokenizer, n):
    backend = ScriptedBackend(tokenizer, hang_after_script=True, token_delay_s=0.01)
    with running_gateway(tokenizer, backend) as gw:
        with httpx.stream(
            "POST", gw.base_url + "/v1/chat/completions", json=BODY | {"stream": True, "n": n}
        ) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            first = next(line for line in lines if line.startswith("data:"))
            assert json.loads(first[5:])["choices"][0]["delta"]["role"] == "assistant"
            # The script is fully streamed, then the backend hangs: only we can end it.
            assert not backend.closed_early
        _wait_closed(backend, n)
        assert backend.closed_early == {r.request_id for r in backend.requests}
        assert not backend.completed


def test_a_client_leaving_a_non_streaming_request_aborts_it(tokenizer):
    backend = ScriptedBackend(tokenizer, hang_after_script=True)
    with running_gateway(tokenizer, backend) as gw:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(gw.base_url + "/v1/chat/completions", json=BODY, timeout=0.5)
        _wait_closed(backend, 1)


def test_a_finished_request_is_not_counted_as_aborted(tokenizer):
    backend = ScriptedBackend(tokenizer)
    with running_gateway(tokenizer, backend) as gw:
        r = httpx.post(gw.base_url + "/v1/chat/completions", json=BODY | {"stream": True})
        assert r.text.rstrip().endswith("data: [DONE]")
    assert backend.completed == {backend.requests[0].request_id}
    assert not backend.closed_early


def test_leaving_before_the_first_token_of_a_stream_aborts_it(tokenizer):
    # A long prefill: the first token would come only after the client gave up.
    backend = ScriptedBackend(tokenizer, token_delay_s=30)
    with running_gateway(tokenizer, backend) as gw:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                gw.base_url + "/v1/chat/completions", json=BODY | {"stream": True}, timeout=0.5
            )
        _wait_closed(backend, 1)
