"""Per-node CPU quotas: one cpu cgroup per node, so that each node computes at its own
share of a core whatever the others do (taskset alone lets nodes on one core slow each
other down). cgroup v1 (`cpu.cfs_quota_us`) or v2 (`cpu.max`), whichever is mounted."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from deploy.testbed.netns import TestbedError

PERIOD_US = 100_000
V1 = Path("/sys/fs/cgroup/cpu")
V2 = Path("/sys/fs/cgroup")


def cpu_root() -> tuple[Path, int]:
    if (V1 / "cpu.cfs_quota_us").exists():
        return V1, 1
    controllers = V2 / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        return V2, 2
    raise TestbedError("no cpu cgroup controller is mounted: drop --cpu-share or mount one")


def make_quota(name: str, cores: float) -> Path:
    """A cgroup named `name` whose tasks together get `cores` CPUs' worth of time."""
    root, version = cpu_root()
    path = root / name
    path.mkdir(exist_ok=False)
    quota = max(1000, int(cores * PERIOD_US))
    if version == 1:
        (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (path / "cpu.cfs_quota_us").write_text(str(quota))
    else:
        (path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
    return path


def in_cgroup(path: Path, argv: list[str]) -> list[str]:
    """`argv`, started inside cgroup `path` (the shell moves itself, then execs: the
    process and every thread it makes are in it from the start)."""
    return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(path), *argv]


def remove_cgroup(path: Path, timeout_s: float = 5.0) -> None:
    """rmdir once its tasks are gone (a killed process leaves it a moment later)."""
    deadline = time.monotonic() + timeout_s
    while path.exists():
        try:
            path.rmdir()
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.1)


def stale_cgroups(pattern) -> list[Path]:
    """Our cgroups (names matching `pattern`) whose testbed process is gone."""
    with contextlib.suppress(TestbedError):
        root, _ = cpu_root()
        return [
            p for p in root.iterdir()
            if (m := pattern.match(p.name)) and not os.path.exists(f"/proc/{m.group(1)}")
        ]  # fmt: skip
    return []
