"""`parallax bench KIND`: dispatch to the benchmark plugin registered for KIND."""

from __future__ import annotations

import json
import sys
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


def run_bench(config: BenchConfig) -> int:
    (ep,) = [ep for ep in entry_points(group=GROUP) if ep.name == config.kind]
    result = ep.load()(config)
    write_result(config, result)
    return 0


bench_command = Command("bench", BenchConfig, run_bench, BenchConfig.command_help)
