"""`parallax status`: a running cluster's nodes table and layer map, in the terminal.

Reads `GET /cluster/status` and draws it with `rich`; the layer map rows come
from the same `layer_map` the dashboard uses, so both always agree. Imports
neither torch nor gRPC: it must start instantly on any machine.
"""

from __future__ import annotations

import sys
from typing import Any

import httpx
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from coordinator.dashboard.view import layer_map
from parallax.cli import Command
from parallax.config.status import StatusConfig

STATE_STYLE = {
    "ready": "green",
    "loading": "yellow",
    "joining": "blue",
    "standby": "grey62",
    "leaving": "magenta",
    "dead": "red",
}
MAP_WIDTH = 64  # characters for the whole layer axis


def _scaled(value: float, units: tuple[str, ...], base: float) -> str:
    i = 0
    while abs(value) >= base and i < len(units) - 1:
        value /= base
        i += 1
    return f"{value:.0f} {units[i]}" if value >= 100 or i == 0 else f"{value:.1f} {units[i]}"


def flops(v: float) -> str:
    return _scaled(v, ("FLOP/s", "kFLOP/s", "MFLOP/s", "GFLOP/s", "TFLOP/s", "PFLOP/s"), 1000)


def bandwidth(v: float) -> str:
    return _scaled(v, ("B/s", "kB/s", "MB/s", "GB/s", "TB/s"), 1000)


def memory(v: float) -> str:
    return _scaled(v, ("B", "KiB", "MiB", "GiB", "TiB"), 1024)


def span(r: list[int] | None) -> str:
    return "—" if r is None else f"[{r[0]}, {r[1]})"


def latency(s: float | None) -> str:
    if s is None:
        return "—"
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def nodes_table(status: dict[str, Any]) -> Table:
    table = Table(title="Nodes", title_justify="left", header_style="bold", expand=False)
    for name, justify in (
        ("Node", "left"), ("Address", "left"), ("Device", "left"), ("Compute", "right"),
        ("Bandwidth", "right"), ("Memory", "right"), ("Layers", "left"), ("Status", "left"),
        ("Running", "right"), ("Free KV", "right"), ("Tok/s", "right"), ("Heartbeat", "right"),
    ):  # fmt: skip
        table.add_column(name, justify=justify, no_wrap=name in ("Node", "Address", "Layers"))
    for n in status["nodes"]:
        hw, st = n["hardware"], n["status"]
        layers = span(n["assignment"]["range"]) if not n["assignment"]["standby"] else "standby"
        kv = f"{st['kv_free_tokens']}/{st['kv_total_tokens']}" if st["kv_total_tokens"] else "—"
        table.add_row(
            n["name"],
            n["address"],
            hw["device_name"] or hw["device"],
            flops(hw["flops"]),
            bandwidth(hw["mem_bandwidth"]),
            memory(hw["memory_bytes"]) + (f" {hw['format']['label']}" if hw.get("format") else ""),
            layers,
            Text("quarantined", style="bold red")
            if n.get("quarantined")
            else Text(
                n["state"]
                + (f" ({n['slower_than_claimed']}x slow)" if n.get("slower_than_claimed") else ""),
                style=STATE_STYLE.get(n["state"], ""),
            ),
            str(st["running_requests"]),
            kv,
            f"{st['tokens_per_s']:.1f}",
            f"{n['heartbeat_age_s']:.1f} s",
        )
    if not status["nodes"]:
        table.add_row("(no nodes yet)", *[""] * 11)
    return table


def _cells(start: int, end: int, num_layers: int) -> tuple[int, int]:
    return round(start * MAP_WIDTH / num_layers), round(end * MAP_WIDTH / num_layers)


def _draw_lane(line: Text, bars: list[dict[str, Any]], num_layers: int, offline: bool) -> None:
    at = 0
    for bar in bars:
        lo, hi = _cells(*bar["range"], num_layers)
        line.append(" " * max(0, lo - at))
        width = max(1, hi - lo)
        body = f"{bar['name']} {span(bar['range'])}"
        body = body if len(body) + 2 <= width else bar["name"]
        cell = ("▏" + body)[:width].ljust(width)
        colour = STATE_STYLE.get(bar["state"], "grey62")
        line.append(cell, style="red" if offline else f"black on {colour}")
        at = lo + width


def map_lines(status: dict[str, Any]) -> list[Text]:
    """The layer map as text: an axis, a coverage strip, then one line per row of bars."""
    lm = layer_map(status)
    num_layers = lm["num_layers"]
    label_w = 11
    axis = Text(" " * label_w + "0".ljust(MAP_WIDTH) + str(num_layers), style="grey62")
    strip = ["█"] * MAP_WIDTH
    styles = ["green"] * MAP_WIDTH
    for gaps, char, style in ((lm["serving_gaps"], "▒", "yellow"), (lm["gaps"], "░", "red")):
        for a, b in gaps:
            lo, hi = _cells(a, b, num_layers)
            for i in range(lo, max(hi, lo + 1)):
                strip[i], styles[i] = char, style
    coverage = Text("coverage".ljust(label_w), style="grey62")
    for char, style in zip(strip, styles, strict=True):
        coverage.append(char, style=style)
    lines = [axis, coverage]
    replica = 0
    for group in lm["groups"]:
        replica += group["kind"] == "replica"
        label = {"replica": f"replica {replica}", "offline": "offline"}.get(
            group["kind"], "partial"
        )
        for i, bars in enumerate(group["lanes"]):
            line = Text((label if i == 0 else "").ljust(label_w), style="grey62")
            _draw_lane(line, bars, num_layers, offline=group["kind"] == "offline")
            lines.append(line)
    for a, b in lm["gaps"]:
        lines.append(
            Text(f"uncovered layers {span([a, b])}: requests fail until nodes join", "red")
        )
    if lm["standby"]:
        lines.append(Text(f"standby: {', '.join(lm['standby'])}", style="grey62"))
    for q in lm.get("quarantined", ()):
        lines.append(Text(f"quarantined: {q['name']} ({q['node_id']}): {q['reason']}", "red"))
    return lines


def summary(status: dict[str, Any]) -> list[Text]:
    model = status["model"]
    cov = status["coverage"]
    head = Text(f"{model['name']} · {model['num_layers']} layers · ", style="bold")
    head.append(
        "serving" if cov["serving"] else "not serving", "green" if cov["serving"] else "red"
    )
    out = [head, Text(f"allocation: {status['allocation']['reason']}", style="grey62")]
    traffic = status.get("traffic")
    if traffic:
        out.append(
            Text(
                f"traffic: {traffic['requests_per_s']:.2f} req/s · "
                f"{traffic['tokens_per_s']:.1f} tok/s · {len(traffic['active'])} active · "
                f"TTFT p50 {latency(traffic['ttft_s']['p50'])} "
                f"p99 {latency(traffic['ttft_s']['p99'])}"
            )
        )
    if status.get("cluster"):
        out.append(Text(f"join: {status['cluster']['join_command']}", style="cyan"))
    return out


def render(status: dict[str, Any], console: Console) -> None:
    console.print(Group(*summary(status)))
    console.print()
    console.print(nodes_table(status))
    console.print()
    console.print(Text("Layer map", style="bold"))
    for line in map_lines(status):
        console.print(line, no_wrap=True, overflow="crop")


def run(config: StatusConfig) -> int:
    url = config.url.rstrip("/") + "/cluster/status"
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    try:
        reply = httpx.get(url, headers=headers, timeout=config.timeout_s)
        if reply.status_code == 401:
            print(
                f"parallax status: {url} needs a key: pass --api-key (an API key or a "
                "dashboard key of the coordinator) or set PARALLAX_API_KEY",
                file=sys.stderr,
            )
            return 1
        status = reply.raise_for_status().json()
    except httpx.HTTPError as e:
        print(f"parallax status: cannot read {url}: {e}; is `parallax run` up?", file=sys.stderr)
        return 1
    # A pipe gets a wide fixed width: the table must not wrap node names mid-word.
    console = Console(width=None if sys.stdout.isatty() else 160)
    render(status, console)
    return 0


status_command = Command("status", StatusConfig, run, StatusConfig.command_help)
