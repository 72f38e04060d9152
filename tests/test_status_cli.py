"""`parallax status` as a subprocess against a live cluster: every node, its layers, the map."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from parallax.procs import PARALLAX


def status_cli(url: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*PARALLAX, "status", "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, NO_COLOR="1"),
    )


def node_line(out: str, address: str) -> str:
    lines = [line for line in out.splitlines() if address in line]
    assert len(lines) == 1, f"want one row for {address} in:\n{out}"
    return lines[0]


def group_lines(map_part: str, label: str) -> str:
    """The lines of one map group: its labelled lane and the unlabelled lanes under it."""
    lines = map_part.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(label))
    end = start + 1
    while end < len(lines) and lines[end].startswith(" " * 11) and lines[end].strip():
        end += 1
    return "\n".join(lines[start:end])


def test_lists_every_node_with_its_layers_and_draws_the_map(cluster):
    snap = cluster.status()
    r = status_cli(cluster.http_url)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for n in snap["nodes"]:
        a, b = n["assignment"]["range"]
        row = node_line(out, n["address"])
        assert n["name"] in row and f"[{a}, {b})" in row and "ready" in row
    # The map: a complete replica from layer 0, and every node's bar with its range.
    map_part = out.split("Layer map", 1)[1]
    assert "[0, " in group_lines(map_part, "replica 1")
    for n in snap["nodes"]:
        a, b = n["assignment"]["range"]
        assert f"{n['name']} [{a}, {b})" in map_part
    assert "uncovered" not in map_part
    assert f"parallax join --coordinator {cluster.grpc_address}" in out


def test_a_dead_node_shows_dead_and_offline(cluster):
    victim = cluster.workers[-1]
    name = "node2"
    address = next(n["address"] for n in cluster.status()["nodes"] if n["name"] == name)
    os.killpg(victim.popen.pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        states = {n["name"]: n["state"] for n in cluster.status()["nodes"]}
        if states.get(name) == "dead":
            break
        time.sleep(0.3)
    r = status_cli(cluster.http_url)
    assert r.returncode == 0, r.stderr
    table, map_part = r.stdout.split("Layer map", 1)
    assert "dead" in node_line(table, address)
    assert name in group_lines(map_part, "offline")


def test_unreachable_coordinator_fails_clearly():
    r = status_cli("http://127.0.0.1:1")
    assert r.returncode == 1
    assert "cannot read http://127.0.0.1:1/cluster/status" in r.stderr


def test_does_not_import_torch():
    code = "import sys, coordinator.status_cli; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False", r.stderr
