"""The committed gRPC stubs are exactly what `proto/` generates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

COMMITTED = Path(__file__).resolve().parents[1] / "parallax" / "rpc"


def test_committed_stubs_match_proto(tmp_path: Path) -> None:
    # protoc runs in its own process: its bundled protobuf can abort an interpreter
    # that already loaded other native protobuf users (seen after pandas + torch).
    code = f"from parallax.rpc.generate import generate; generate(__import__('pathlib').Path({str(tmp_path)!r}))"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    fresh = sorted((tmp_path / "parallax" / "rpc").glob("*_pb2*.py*"))
    names = [p.name for p in fresh]
    assert names == ["parallax_pb2.py", "parallax_pb2.pyi", "parallax_pb2_grpc.py"]
    stale = [p.name for p in fresh if p.read_bytes() != (COMMITTED / p.name).read_bytes()]
    assert not stale, (
        f"{', '.join(stale)} differ from proto/; run `.venv/bin/python -m parallax.rpc.generate`"
    )
