"""Talking to a live cluster as a client does, and the local engine's answer to compare."""

from __future__ import annotations

import json

import httpx

from parallax.models.registry import resolve_model
from parallax.sampling import SamplingParams
from parallax.tokenizer import Tokenizer
from tests.support.engine import local_engine

QUESTIONS = ["hello there", "what is 2+2?", "tell me a story", "name three colors"]


def model_id(url: str) -> str:
    return httpx.get(f"{url}/v1/models", timeout=10).json()["data"][0]["id"]


def chat(url: str, content: str, max_tokens: int = 12, stream: bool = False) -> str:
    body = {
        "model": model_id(url),
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    if not stream:
        r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
        r.raise_for_status()
        return r.json()["choices"][0]["message"]["content"]
    body["stream"] = True
    text = ""
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                for ch in json.loads(line[6:])["choices"]:
                    text += ch["delta"].get("content") or ""
    return text


def local_texts(path, questions, max_tokens=12) -> list[str]:
    tok = Tokenizer.from_model(resolve_model(str(path)))
    eng = local_engine(path, eos_ids=tok.eos_token_ids, vocab_limit=tok.vocab_size)
    out = []
    for q in questions:
        ids = tok.encode_chat([{"role": "user", "content": q}])
        gen = eng.generate([ids], SamplingParams(max_tokens=max_tokens))[0]
        gen = [t for t in gen if t not in tok.eos_token_ids]
        out.append(tok.decode(gen))
    return out


def tool_round_trip(ask: list[dict]) -> list[dict]:
    """`ask`, the assistant's get_weather call for Paris, and the tool's answer: a
    second turn carrying a tool result, as agent frameworks send it."""
    return [
        *ask,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'},
    ]
