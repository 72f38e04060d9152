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
    tls: bool = False  # every gRPC link is mutual TLS: a joiner needs a cluster certificate

    def join_command(self) -> str:
        cmd = f"parallax join --coordinator {self.grpc_address}"
        # Never the secret itself: the page may be seen by people who must not join.
        if self.join_token_required:
            cmd += " --join-token $PARALLAX_JOIN_TOKEN"
        if self.tls:
            cmd += " --tls-cert HOST.pem --tls-key HOST.key --tls-ca ca.pem"
        return cmd

    def to_json(self) -> dict[str, Any]:
        return {
            "grpc_address": self.grpc_address,
            "model": self.model,
            "join_token_required": self.join_token_required,
            "tls": self.tls,
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


def _next_stage(
    pool: list[dict[str, Any]], last: dict[str, Any], reach: int, overlap: bool
) -> dict[str, Any] | None:
    """The node to extend a pipeline that holds layers [0, reach).

    One starting exactly at `reach` (replicas tile); with `overlap`, else the one
    overlapping the last stage least (the router may run a suffix of a node's
    range), which leaves the nodes that overlap more to pipelines that end earlier.
    """
    exact = next((n for n in pool if n["range"][0] == reach), None)
    if exact is not None or not overlap:
        return exact
    fits = [n for n in pool if last["range"][0] < n["range"][0] < reach < n["range"][1]]
    return max(fits, key=lambda n: n["range"][0], default=None)


def _chains(
    placed: list[dict[str, Any]], num_layers: int
) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
    """Greedy pipelines, one from each node holding layer 0, and the nodes none took.

    Every pipeline first takes only stages that tile exactly, so one replica's
    overlapping stage cannot take the node another replica tiles with; then
    overlapping stages finish what is left.
    """
    pool = sorted(placed, key=lambda n: (n["range"][0], -n["range"][1], n["node_id"]))
    chains = [[n] for n in pool if n["range"][0] == 0]
    pool = [n for n in pool if n["range"][0] != 0]
    for overlap in (False, True):
        for chain in chains:
            while (reach := chain[-1]["range"][1]) < num_layers:
                nxt = _next_stage(pool, chain[-1], reach, overlap)
                if nxt is None:
                    break
                chain.append(nxt)
                pool.remove(nxt)
    return chains, pool


def _lanes(bars: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """First-fit packing into lanes whose bars do not overlap, in order of start."""
    lanes: list[list[dict[str, Any]]] = []
    for bar in sorted(bars, key=lambda b: (b["range"][0], b["range"][1])):
        lane = next((ln for ln in lanes if ln[-1]["range"][1] <= bar["range"][0]), None)
        if lane is None:
            lanes.append([bar])
        else:
            lane.append(bar)
    return lanes


def _complete(chain: list[dict[str, Any]], num_layers: int) -> bool:
    reach = 0
    for bar in chain:
        if bar["range"][0] > reach:
            return False
        reach = max(reach, bar["range"][1])
    return reach >= num_layers


def layer_map(snapshot: dict[str, Any]) -> dict[str, Any]:
    """Groups of node bars over layers [0, L): one per replica (pipeline), then the rest.

    Each group has lanes of non-overlapping bars (overlapping stages stack). A
    group is "replica" when its bars reach from layer 0 to L without a hole,
    "partial" when a pipeline from layer 0 stops short, "extra" for nodes no
    pipeline took (the router may still use them), "offline" for dead and
    leaving nodes with the range they last held. Nodes without layers are
    listed as standby.
    """
    num_layers = snapshot["model"]["num_layers"]
    nodes = snapshot["nodes"]
    gone = ("dead", "leaving")
    online = [n for n in nodes if n["state"] not in gone]
    placed = [_bar(n) for n in online if n["assignment"]["range"] is not None]
    chains, rest = _chains(placed, num_layers)
    groups = [
        {"kind": "replica" if _complete(c, num_layers) else "partial", "lanes": _lanes(c)}
        for c in chains
    ]
    if rest:
        groups.append({"kind": "extra", "lanes": _lanes(rest)})
    offline = [_bar(n) for n in nodes if n["state"] in gone and n["assignment"]["range"]]
    if offline:
        groups.append({"kind": "offline", "lanes": _lanes(offline)})
    held = [n for n in online if n["assignment"]["range"] is None]
    standby = [n["name"] for n in held if not n.get("quarantined")]
    # Spot checks found these lying (coordinator/verify): they hold nothing and say why.
    quarantined = [
        {"node_id": n["node_id"], "name": n["name"], "reason": n["quarantined"]}
        for n in nodes
        if n.get("quarantined")
    ]
    return {
        "num_layers": num_layers,
        "groups": groups,
        "standby": standby,
        "quarantined": quarantined,
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
