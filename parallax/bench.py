"""`parallax bench KIND`: dispatch to the benchmark plugin registered for KIND."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from parallax.cli import Command
from parallax.config.bench import BenchConfig

GROUP = "parallax.benchmarks"


def write_result(config: BenchConfig, result: dict[str, Any]) -> Path:
    out = Path(config.output or f"bench-output/{config.kind}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {out}", file=sys.stderr)
    return out


# Kinds found by name when no entry point is installed for them: a checkout used without
# reinstalling (entry points are read from the install), or run bare on a GPU machine.
BUILT_IN = {"kernels": "bench.kernels:bench_kernels"}


def load_bench(kind: str) -> Callable[[BenchConfig], dict[str, Any]]:
    eps = [ep for ep in entry_points(group=GROUP) if ep.name == kind]
    if eps:
        return eps[0].load()
    module, _, attr = BUILT_IN[kind].partition(":")
    return getattr(importlib.import_module(module), attr)


def run_bench(config: BenchConfig) -> int:
    result = load_bench(config.kind)(config)
    write_result(config, result)
    return 0


bench_command = Command("bench", BenchConfig, run_bench, BenchConfig.command_help)
