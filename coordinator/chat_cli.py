"""`parallax chat`: stream replies from a gateway in the terminal, keeping the history.

Uses the official `openai` client, so it works with any OpenAI-compatible server.
Commands: `/reset` forgets the conversation, `/quit` (or Ctrl-D) leaves.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from typing import TextIO

import openai

from parallax.cli import Command
from parallax.config.chat import ChatConfig

HELP = "Type a message. /reset forgets the conversation, /quit leaves."


class ChatSession:
    """The conversation so far, as OpenAI messages."""

    def __init__(self, system: str) -> None:
        self._system = system
        self.messages: list[dict[str, str]] = []
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self._system}] if self._system else []

    def ask(self, text: str) -> list[dict[str, str]]:
        return [*self.messages, {"role": "user", "content": text}]

    def commit(self, question: str, answer: str) -> None:
        self.messages += [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]


def _lines(prompt: str) -> Iterator[str]:
    while True:
        try:
            yield input(prompt)
        except EOFError:
            return


def chat_loop(
    config: ChatConfig,
    lines: Iterator[str],
    out: TextIO,
    client_factory: Callable[..., openai.OpenAI] = openai.OpenAI,
) -> int:
    client = client_factory(base_url=config.url, api_key=config.api_key or "none")
    try:
        model = config.model or client.models.list().data[0].id
    except openai.APIConnectionError:
        print(f"cannot reach {config.url}: is `parallax run` up?", file=out)
        return 1
    except openai.APIStatusError as e:
        print(f"the server refused: {e.message}", file=out)
        return 1
    print(f"chatting with {model} at {config.url}. {HELP}", file=out)
    session = ChatSession(config.system)
    for line in lines:
        text = line.strip()
        if text == "/quit":
            break
        if text == "/reset":
            session.reset()
            print("(conversation forgotten)", file=out)
            continue
        if not text:
            continue
        answer = _reply(client, config, model, session.ask(text), out)
        if answer is not None:
            session.commit(text, answer)
    return 0


def _reply(
    client: openai.OpenAI,
    config: ChatConfig,
    model: str,
    messages: list[dict[str, str]],
    out: TextIO,
) -> str | None:
    """Stream one answer to `out`; None when it failed (the turn is then not kept)."""
    parts: list[str] = []
    try:
        stream = client.chat.completions.create(
            model=model,
            messages=messages,  # type: ignore[arg-type]
            temperature=config.temperature,
            max_tokens=config.max_tokens or None,
            stream=True,
        )
        with stream:
            for chunk in stream:
                delta = chunk.choices[0].delta.content if chunk.choices else None
                if delta:
                    parts.append(delta)
                    out.write(delta)
                    out.flush()
    except KeyboardInterrupt:
        out.write("\n(interrupted)\n")
        return None
    except openai.APIError as e:
        out.write(f"\nerror: {e.message}\n")
        return None
    out.write("\n")
    return "".join(parts)


def run(config: ChatConfig) -> int:
    # Per-request HTTP log lines would interleave with the conversation.
    for noisy in ("httpx", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    interactive = sys.stdin.isatty()
    return chat_loop(config, _lines("> " if interactive else ""), sys.stdout)


chat_command = Command("chat", ChatConfig, run, ChatConfig.command_help)
