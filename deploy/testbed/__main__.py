"""`python -m deploy.testbed run ...` (as root): start a testbed and keep it up until Ctrl-C.
`python -m deploy.testbed bench ...` (as root): the allocation-policy benchmark
(experiment.py; docs/BENCHMARKS.md records it).
`python -m deploy.testbed clean`: remove namespaces left by a testbed that was killed."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys

from deploy.testbed.bed import Testbed
from deploy.testbed.config import ExperimentConfig, TestbedConfig
from deploy.testbed.cpu import remove_cgroup, stale_cgroups
from deploy.testbed.netns import TestbedError, namespaces, remove_namespace
from parallax.cli import add_config_arguments, config_from_args

STALE = re.compile(r"^pxtb(\d+)-")


def clean() -> int:
    """Namespaces named pxtb<PID>-* whose testbed process is gone."""
    for ns in namespaces():
        m = STALE.match(ns)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            remove_namespace(ns)
            print(f"removed {ns}")
    for path in stale_cgroups(STALE):
        remove_cgroup(path)
        print(f"removed {path}")
    return 0


def run(cfg: TestbedConfig) -> int:
    # SIGTERM unwinds like Ctrl-C, so the `with` block tears everything down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with Testbed(cfg, echo=True) as bed:
        bed.wait_ready(cfg.nodes)
        ns = bed.net.hosts["coord"]
        print(
            f"\ntestbed up: {cfg.nodes} nodes. The API is reachable from the namespaces only:\n"
            f"  ip netns exec {ns} curl {bed.url}/cluster/status\n"
            f"  ip netns exec {ns} {sys.executable} -m parallax chat --url {bed.url}/v1\n"
            "Ctrl-C stops everything and removes the namespaces.",
            flush=True,
        )
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.testbed", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    add_config_arguments(sub.add_parser("run", help=TestbedConfig.command_help), TestbedConfig)
    add_config_arguments(
        sub.add_parser("bench", help=ExperimentConfig.command_help), ExperimentConfig
    )
    sub.add_parser("clean", help="remove namespaces of testbeds that were killed")
    ns = parser.parse_args(argv)
    try:
        if ns.what == "clean":
            return clean()
        if ns.what == "bench":
            from deploy.testbed.experiment import run_experiment

            signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: tear down
            if os.geteuid() != 0:
                raise TestbedError("the testbed makes network namespaces: run it as root")
            run_experiment(config_from_args(ExperimentConfig, ns))
            return 0
        return run(config_from_args(TestbedConfig, ns))
    except TestbedError as e:
        print(f"testbed: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
