"""What the dashboard and `parallax status` draw, computed from `/cluster/status` JSON.

Pure functions over the snapshot's plain data, so the page, the terminal view and
the tests agree on one layout: which node bars share a row of the layer map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ClusterInfo:
    """How to reach this cluster, for the "join a node" box."""

    grpc_address: str
    model: str
    join_token_required: bool

    def join_command(self) -> str:
        cmd = f"parallax join --coordinator {self.grpc_address}"
        # Never the secret itself: the page may be seen by people who must not join.
        return cmd + " --join-token $PARALLAX_JOIN_TOKEN" if self.join_token_required else cmd

    def to_json(self) -> dict[str, Any]:
        return {
            "grpc_address": self.grpc_address,
            "model": self.model,
            "join_token_required": self.join_token_required,
            "join_command": self.join_command(),
        }


def _bar(node: dict[str, Any]) -> dict[str, Any]:
    start, end = node["assignment"]["range"]
    return {
        "node_id": node["node_id"],
        "name": node["name"],
        "state": node["state"],
        "serving": node["serving"],
        "range": [start, end],
    }


def _chains(placed: list[dict[str, Any]], num_layers: int) -> list[list[dict[str, Any]]]:
    """Greedy pipelines: from layer 0, follow a node that starts where the last ended."""
    pool = sorted(placed, key=lambda n: (n["range"][0], -n["range"][1], n["node_id"]))
    chains = []
    while any(n["range"][0] == 0 for n in pool):
        chain = [next(n for n in pool if n["range"][0] == 0)]
        pool.remove(chain[0])
        while chain[-1]["range"][1] < num_layers:
            nxt = next((n for n in pool if n["range"][0] == chain[-1]["range"][1]), None)
            if nxt is None:
                break
            chain.append(nxt)
            pool.remove(nxt)
        chains.append(chain)
    # What is left overlaps the chains or starts mid-model: pack it into extra rows.
    extra: list[list[dict[str, Any]]] = []
    for n in pool:
        row = next((r for r in extra if r[-1]["range"][1] <= n["range"][0]), None)
        if row is None:
            extra.append([n])
        else:
            row.append(n)
    return chains + extra


def layer_map(snapshot: dict[str, Any]) -> dict[str, Any]:
    """Rows of node bars over layers [0, L): one per replica (chain), then the rest.

    A row is "replica" when its bars tile every layer, "partial" otherwise.
    Dead and leaving nodes get an "offline" row with the range they last held;
    nodes without layers are listed as standby.
    """
    num_layers = snapshot["model"]["num_layers"]
    nodes = snapshot["nodes"]
    gone = ("dead", "leaving")
    online = [n for n in nodes if n["state"] not in gone]
    placed = [_bar(n) for n in online if n["assignment"]["range"] is not None]
    rows = []
    for bars in _chains(placed, num_layers):
        complete = bars[0]["range"][0] == 0 and bars[-1]["range"][1] == num_layers
        tiled = all(a["range"][1] == b["range"][0] for a, b in zip(bars, bars[1:], strict=False))
        rows.append({"kind": "replica" if complete and tiled else "partial", "bars": bars})
    offline = [_bar(n) for n in nodes if n["state"] in gone and n["assignment"]["range"]]
    for bars in _chains(offline, num_layers):
        rows.append({"kind": "offline", "bars": bars})
    standby = [n["name"] for n in online if n["assignment"]["range"] is None]
    return {
        "num_layers": num_layers,
        "rows": rows,
        "standby": standby,
        "gaps": snapshot["coverage"]["gaps"],
        "serving_gaps": snapshot["coverage"]["serving_gaps"],
    }


def dashboard_view(
    snapshot: dict[str, Any], traffic: dict[str, Any], info: ClusterInfo
) -> dict[str, Any]:
    """The registry snapshot plus live traffic, the layer map and how to join."""
    return {
        **snapshot,
        "traffic": traffic,
        "layer_map": layer_map(snapshot),
        "cluster": info.to_json(),
    }
