"""`parallax demo`: a whole cluster on one machine, as real processes.

It starts `parallax run`, then N `parallax join` processes, waits until every
layer is served, prints where to go, and stops everything on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from parallax.cli import Command
from parallax.config.demo import DemoConfig
from parallax.errors import ParallaxError


class DemoError(ParallaxError):
    pass


def _spawn(args: list[str], prefix: str, sink: list[str]) -> subprocess.Popen:
    p = subprocess.Popen(
        [sys.executable, "-m", "parallax", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
    )

    def pump() -> None:
        for line in p.stdout:
            sink.append(line)
            if not line.startswith("{") and "%|" not in line:  # human lines, not JSON logs
                print(f"[{prefix}] {line}", end="", flush=True)

    threading.Thread(target=pump, daemon=True).start()
    return p


def _wait_line(lines: list[str], pattern: str, proc: subprocess.Popen, timeout: float) -> str:
    rx, deadline = re.compile(pattern), time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(lines):
            m = rx.search(line)
            if m:
                return m.group(1)
        if proc.poll() is not None:
            raise DemoError(
                f"the coordinator exited with {proc.returncode}:\n{''.join(lines[-20:])}"
            )
        time.sleep(0.1)
    raise DemoError(f"the coordinator did not start within {timeout:g} s")


def _serving(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/cluster/status", timeout=2) as r:
            return bool(json.load(r)["coverage"]["serving"])
    except (OSError, ValueError, KeyError):
        return False


def run_demo(cfg: DemoConfig) -> int:
    procs: list[subprocess.Popen] = []
    logs: list[str] = []
    try:
        coord = _spawn(
            [
                "run",
                "--model",
                cfg.model,
                "--grpc-port",
                str(cfg.grpc_port),
                "--port",
                str(cfg.port),
                "--min-stages",
                str(cfg.nodes),
            ],
            "coordinator",
            logs,
        )
        procs.append(coord)
        grpc_addr = _wait_line(logs, r"coordinator grpc listening on (\S+)", coord, 60)
        url = _wait_line(logs, r"gateway http listening on (\S+)", coord, 30)
        for i in range(cfg.nodes):
            procs.append(
                _spawn(
                    [
                        "join",
                        "--coordinator",
                        grpc_addr,
                        "--name",
                        f"node{i}",
                        "--threads",
                        str(cfg.threads),
                        "--kv-cache-mb",
                        str(cfg.kv_cache_mb),
                    ],
                    f"node{i}",
                    [],
                )
            )
        deadline = time.monotonic() + cfg.ready_timeout_s
        while not _serving(url):
            if time.monotonic() > deadline:
                raise DemoError("the nodes did not cover every layer in time; see the logs above")
            if coord.poll() is not None:
                raise DemoError("the coordinator exited")
            time.sleep(0.5)
        print(
            f"\nParallax is serving {cfg.model} on {cfg.nodes} nodes.\n"
            f"  API:       {url}/v1\n"
            f"  Dashboard: {url}/\n"
            f"  Join:      parallax join --coordinator {grpc_addr}\n"
            f"  Try:       curl {url}/v1/chat/completions -H 'Content-Type: application/json' "
            f"""-d '{{"model": "{cfg.model}", "messages": [{{"role": "user", "content": "Hi!"}}], "stream": true}}'\n"""
            "Press Ctrl-C to stop.\n",
            flush=True,
        )
        while coord.poll() is None:
            time.sleep(0.5)
        return coord.returncode or 0
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
        return 0
    finally:
        for p in reversed(procs):  # nodes first, so they can say goodbye
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


demo_command = Command("demo", DemoConfig, run_demo, DemoConfig.command_help)
