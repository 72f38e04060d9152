"""Config of `parallax status`: the cluster's nodes and layer map in the terminal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from parallax.config.base import ConfigBase, opt


@dataclass(frozen=True)
class StatusConfig(ConfigBase):
    command_help: ClassVar[str] = "show a running cluster's nodes and layer map"

    url: str = opt("http://127.0.0.1:8000", help="HTTP address of the coordinator (`parallax run`)")
    timeout_s: float = opt(5.0, help="give up on the coordinator after this long", unit="s")
    api_key: str = opt(
        "",
        help="API key or dashboard key, when the coordinator has keys",
        env="PARALLAX_API_KEY",
    )

    def validate(self) -> None:
        self.require(
            self.url.startswith(("http://", "https://")), "url", "must start with http(s)://"
        )
        self.require(self.timeout_s > 0, "timeout_s", "must be positive")
