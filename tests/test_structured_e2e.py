"""Structured outputs and forced tool calls on a live cluster of the built-in SmolLM2
(two whole replicas), through the official openai client: JSON mode on 20 prompts,
streamed and not; a JSON schema with required fields and an enum; a forced get_weather
call, streamed deltas assembling into exactly the whole call; and a constrained stream
whose node is SIGKILLed mid-way, replayed on the other replica. Slow: marked e2e."""

from __future__ import annotations

import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import openai
import pytest

from tests.support.chat import tool_round_trip
from tests.support.chat_templates import WEATHER_TOOL
from tests.support.cluster import Cluster, routed_hops

pytestmark = pytest.mark.e2e

SUBJECTS = [
    "a cat", "Paris", "the moon", "a bicycle", "coffee", "a rainbow", "the ocean", "a robot",
    "winter", "a library", "pizza", "a volcano", "music", "a forest", "the sun", "a train",
    "chess", "a garden", "snow", "a castle", "a dog", "tea", "a river", "a city",
]  # fmt: skip
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "role": {"enum": ["admin", "user", "guest"]},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "role", "age"],
    "additionalProperties": False,
}
LONG = {  # a long answer, so the stream can be cut in the middle
    "type": "object",
    "properties": {
        "numbers": {
            "type": "array",
            "items": {"type": "integer", "minimum": 0, "maximum": 9},
            "minItems": 40,
            "maxItems": 40,
        }
    },
    "required": ["numbers"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def cluster():
    with Cluster("smollm2-135m", nodes=2, min_stages=1) as c:
        yield c


@pytest.fixture
def client(cluster) -> openai.OpenAI:
    return openai.OpenAI(
        api_key="none", base_url=cluster.http_url + "/v1", max_retries=0, timeout=120
    )


def _model(client) -> str:
    return client.models.list().data[0].id


def _text(client, stream: bool, **kwargs) -> tuple[str, str | None]:
    """(content, finish_reason), streamed or not."""
    args = {"model": _model(client), "temperature": 0, "max_tokens": 80} | kwargs
    if not stream:
        choice = client.chat.completions.create(**args).choices[0]
        return choice.message.content or "", choice.finish_reason
    text, finish = "", None
    for chunk in client.chat.completions.create(stream=True, **args):
        for ch in chunk.choices:
            text += ch.delta.content or ""
            finish = ch.finish_reason or finish
    return text, finish


def _args(worker) -> str:
    return " ".join(worker.popen.args) + " "


def _ask(content: str) -> list[dict]:
    return [{"role": "user", "content": content}]


def test_json_mode_answers_parse_on_20_prompts_streamed_and_not(client):
    """Every answer the grammar completed parses. A 135M model under greedy decoding
    sometimes repeats itself inside a string until max_tokens cuts it (valid JSON so
    far, but unfinished): at least 20 of the 24 prompts must finish, both ways."""

    def one(job):
        subject, stream, fmt = job
        msgs = _ask(f"Give {subject} as a JSON object with keys name and color.")
        extra = {"response_format": fmt} if fmt else {}
        return _text(client, stream, messages=msgs, max_tokens=160 if fmt else 40, **extra)

    json_mode = {"type": "json_object"}
    jobs = [(s, stream, json_mode) for s in SUBJECTS for stream in (False, True)]
    jobs += [(s, False, None) for s in SUBJECTS[:8]]  # unconstrained, for comparison
    with ThreadPoolExecutor(8) as pool:
        answers = {
            (s, st, f is not None): a
            for (s, st, f), a in zip(jobs, pool.map(one, jobs), strict=True)
        }
    finished = set()
    for (subject, stream, fmt), (text, finish) in answers.items():
        if fmt and finish == "stop":
            assert isinstance(json.loads(text), dict), (subject, stream, text)
            finished.add((subject, stream))
        elif fmt:
            assert finish == "length" and text.startswith("{"), (subject, stream, text)
    both = {s for s in SUBJECTS if (s, False) in finished and (s, True) in finished}
    assert len(both) >= 20, sorted(set(SUBJECTS) - both)
    # Greedy: the streamed answer is the whole one.
    for s in SUBJECTS:
        assert answers[(s, False, True)] == answers[(s, True, True)], s
    # Unconstrained, the model does not answer JSON on its own.
    plain = [answers[(s, False, False)][0] for s in SUBJECTS[:8]]
    assert not all(_parses(t) for t in plain), plain


def _parses(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def test_json_schema_answers_validate(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    for who in ("an administrator named Ann", "a guest", "a user who is 30"):
        for stream in (False, True):
            text, finish = _text(client, stream, messages=_ask(f"Describe {who}."),
                                 response_format=fmt, temperature=0.8, seed=3)  # fmt: skip
            assert finish == "stop", text
            jsonschema.validate(json.loads(text), PERSON)


def test_a_forced_call_validates_and_its_deltas_assemble_into_it(client):
    ask = _ask("What is the weather in Paris?")
    args = {"messages": ask, "tools": [WEATHER_TOOL], "max_tokens": 60, "temperature": 0}
    for choice in ({"type": "function", "function": {"name": "get_weather"}}, "required"):
        whole = client.chat.completions.create(model=_model(client), tool_choice=choice, **args)
        (call,) = whole.choices[0].message.tool_calls
        assert whole.choices[0].finish_reason == "tool_calls"
        assert call.function.name == "get_weather"
        params = WEATHER_TOOL["function"]["parameters"]
        jsonschema.validate(json.loads(call.function.arguments), params)
        parts: dict[int, dict] = {}
        for chunk in client.chat.completions.create(
            model=_model(client), tool_choice=choice, stream=True, **args
        ):
            for d in chunk.choices[0].delta.tool_calls or ():
                p = parts.setdefault(d.index, {"name": "", "arguments": ""})
                p["name"] += d.function.name or ""
                p["arguments"] += d.function.arguments or ""
        assert parts == {0: {"name": call.function.name, "arguments": call.function.arguments}}
    # The second turn, with the tool's answer, is accepted.
    second = client.chat.completions.create(
        model=_model(client), messages=tool_round_trip(ask), tools=[WEATHER_TOOL], max_tokens=8
    )
    assert second.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_a_constrained_stream_replayed_after_a_kill_still_validates(cluster, client):
    fmt = {"type": "json_schema", "json_schema": {"name": "digits", "schema": LONG}}
    args = {"messages": _ask("List forty digits."), "response_format": fmt, "max_tokens": 200}
    want, _ = _text(client, False, **args)
    text, finish, chunks, victim_id = "", None, 0, None
    for chunk in client.chat.completions.create(
        model=_model(client), temperature=0, stream=True, **args
    ):
        for ch in chunk.choices:
            text += ch.delta.content or ""
            finish = ch.finish_reason or finish
        chunks += 1
        if chunks == 4:  # mid-stream: kill the node the request runs on
            hops = routed_hops(cluster)
            victim_id = hops[1] if len(hops) > 1 else hops[0]
            name = victim_id.rsplit("-", 1)[0]  # a node's id is its --name and a suffix
            victim = next(w for w in cluster.workers if f"--name {name} " in _args(w))
            os.killpg(victim.popen.pid, signal.SIGKILL)
    assert victim_id is not None and finish == "stop"
    jsonschema.validate(json.loads(text), LONG)
    assert text == want  # greedy: the replay carried on where the dead chain stopped
    assert any("replaying request on a new chain" in x for x in cluster.coordinator.lines)
