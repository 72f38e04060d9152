"""`parallax demo`: a whole cluster on one machine, as real processes.

It starts `parallax run`, then N `parallax join` processes, waits until every
layer is served, prints where to go, and stops everything on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request

from parallax.cli import Command
from parallax.config.demo import DemoConfig
from parallax.errors import ParallaxError
from parallax.procs import Child, spawn, stop_all


class DemoError(ParallaxError):
    pass


def _echo(prefix: str):
    def echo(line: str) -> None:
        if not line.startswith("{") and "%|" not in line:  # human lines, not JSON logs or bars
            print(f"[{prefix}] {line}", end="", flush=True)

    return echo


def _api_key() -> str:
    """The coordinator inherits this environment: with API keys set, reads need one."""
    keys = [k for k in os.environ.get("PARALLAX_API_KEYS", "").split(",") if k]
    return keys[0] if keys else ""


def _serving(url: str) -> bool:
    key = _api_key()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(f"{url}/cluster/status", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=2) as r:
            return bool(json.load(r)["coverage"]["serving"])
    except (OSError, ValueError, KeyError):
        return False


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_demo(cfg: DemoConfig) -> int:
    # Ctrl-C and SIGTERM both stop the cluster. Set explicitly: a process started in the
    # background by a shell inherits SIGINT ignored, and Python then leaves it ignored.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    procs: list[Child] = []
    try:
        coord = spawn(
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
                "--max-model-len",
                str(cfg.max_model_len),
            ],
            echo=_echo("coordinator"),
        )
        procs.append(coord)
        grpc_addr = coord.wait_for(r"coordinator grpc listening on (\S+)", 60).group(1)
        url = coord.wait_for(r"gateway http listening on (\S+)", 30).group(1)
        for i in range(cfg.nodes):
            procs.append(
                spawn(
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
                    echo=_echo(f"node{i}"),
                )
            )
        deadline = time.monotonic() + cfg.ready_timeout_s
        while not _serving(url):
            if time.monotonic() > deadline:
                raise DemoError("the nodes did not cover every layer in time; see the logs above")
            if coord.popen.poll() is not None:
                raise DemoError("the coordinator exited")
            time.sleep(0.5)
        print(
            f"\nParallax is serving {cfg.model} on {cfg.nodes} nodes.\n"
            f"  API:       {url}/v1\n"
            f"  Dashboard: {url}/{'?key=YOUR_API_KEY' if _api_key() else ''}\n"
            f"  Join:      parallax join --coordinator {grpc_addr}\n"
            f"  Try:       curl {url}/v1/chat/completions -H 'Content-Type: application/json' "
            f"""-d '{{"model": "{cfg.model}", "messages": [{{"role": "user", "content": "Hi!"}}], "stream": true}}'\n"""
            "Press Ctrl-C to stop.\n",
            flush=True,
        )
        while coord.popen.poll() is None:
            time.sleep(0.5)
        return coord.popen.returncode or 0
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
        return 0
    finally:
        # Nodes first (together), so they can say goodbye; then the coordinator.
        stop_all(procs[1:])
        stop_all(procs[:1])


demo_command = Command("demo", DemoConfig, run_demo, DemoConfig.command_help)
