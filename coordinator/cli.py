"""The `parallax run` command: the coordinator, its gateway and dashboard."""

from __future__ import annotations

from parallax.cli import Command
from parallax.config.coordinator import CoordinatorConfig


def run_fn(config: CoordinatorConfig) -> int:
    from coordinator.server import run  # imported on use: `--help` stays fast

    return run(config)


run_command = Command("run", CoordinatorConfig, run_fn, CoordinatorConfig.command_help)
