"""Config of `parallax chat`: a terminal client of any OpenAI-compatible server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from parallax.config.base import ConfigBase, opt


@dataclass(frozen=True)
class ChatConfig(ConfigBase):
    command_help: ClassVar[str] = "chat in the terminal with a running Parallax gateway"

    url: str = opt("http://127.0.0.1:8000/v1", help="base URL of the OpenAI-compatible API")
    api_key: str = opt("", help="Bearer API key of the gateway", env="PARALLAX_API_KEY")
    model: str = opt("", help="model id; default the first one the server lists")
    system: str = opt("", help="system prompt that starts every conversation")
    temperature: float = opt(0.7, help="sampling temperature; 0 = greedy")
    max_tokens: int = opt(512, help="most tokens per reply; 0 = as many as the context allows")

    def validate(self) -> None:
        self.require(
            self.url.startswith(("http://", "https://")), "url", "must start with http(s)://"
        )
        self.require(0.0 <= self.temperature <= 2.0, "temperature", "must be in [0, 2]")
        self.require(self.max_tokens >= 0, "max_tokens", "must be >= 0")
