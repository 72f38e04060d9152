"""The registry's state on disk (`--state-dir`), so a restarted coordinator knows its
nodes: their ids, secrets (identities), addresses, hardware and assignments.

Nodes keep heartbeating while the coordinator is down; after a restart their next
heartbeat proves them against the restored secret and reports the range they still
hold, which equals their restored assignment: they serve again at once and reload
nothing. A node that does not come back within the dead-after time is declared dead
as usual; one that spot checks quarantined stays quarantined. The file holds
secrets: it is written 0600, atomically (write, then rename).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from coordinator.registry_types import Assignment, HardwareInfo, NodeRecord
from parallax.errors import ConfigError
from parallax.models.footprint import Footprint
from parallax.types import LayerRange, NodeId

log = logging.getLogger(__name__)

FORMAT = 1
FILE_NAME = "registry.json"


class StateFile:
    def __init__(self, state_dir: str) -> None:
        self.path = Path(state_dir) / FILE_NAME
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise ConfigError(f"--state-dir={state_dir!r}: cannot create it ({e})") from None

    def save(self, model: str, records: list[NodeRecord]) -> None:
        body = {"format": FORMAT, "model": model, "nodes": [_record_out(r) for r in records]}
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(body, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def load(self, model: str, now: float) -> list[NodeRecord]:
        """The saved nodes, each as if it had just joined (it has the dead-after time
        to heartbeat again); none when there is no file or it is of another model."""
        if not self.path.is_file():
            return []
        try:
            body = json.loads(self.path.read_text())
            if body.get("format") != FORMAT:
                raise ValueError(f"format {body.get('format')!r}, expected {FORMAT}")
            if body.get("model") != model:
                log.warning(
                    "state file is of another model; starting empty",
                    extra={"path": str(self.path), "model": body.get("model")},
                )
                return []
            return [_record_in(n, model, now) for n in body["nodes"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(
                f"{self.path} cannot be read ({e}); move it away to start with an empty registry"
            ) from None


def _record_out(r: NodeRecord) -> dict[str, Any]:
    rng = r.assignment.range
    return {
        "node_id": r.node_id,
        "name": r.name,
        "address": r.address,
        "hardware": asdict(r.hardware),
        "range": [rng.start, rng.end] if rng is not None else None,
        "epoch": r.assignment.epoch,
        "metrics_address": r.metrics_address,
        "secret": r.secret.hex(),
        "counter": r.counter,
        "quarantined": r.quarantined,
    }


def _hardware_in(hw: dict[str, Any]) -> HardwareInfo:
    fp = hw.get("footprint")  # absent in files of older versions
    return HardwareInfo(**{**hw, "footprint": Footprint(**fp) if fp else None})


def _record_in(n: dict[str, Any], model: str, now: float) -> NodeRecord:
    rng = LayerRange(*n["range"]) if n["range"] is not None else None
    return NodeRecord(
        node_id=NodeId(n["node_id"]),
        name=n["name"],
        address=n["address"],
        hardware=_hardware_in(n["hardware"]),
        assignment=Assignment(model, rng, int(n["epoch"])),
        joined_at=now,
        last_heartbeat=now,
        metrics_address=n["metrics_address"],
        secret=bytes.fromhex(n["secret"]),
        counter=int(n["counter"]),
        # A node spot checks caught stays caught across a restart.
        quarantined=str(n.get("quarantined", "")),
    )
