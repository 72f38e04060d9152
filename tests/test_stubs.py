"""The committed gRPC stubs are exactly what `proto/` generates."""

from __future__ import annotations

from pathlib import Path

from parallax.rpc.generate import generate

COMMITTED = Path(__file__).resolve().parents[1] / "parallax" / "rpc"


def test_committed_stubs_match_proto(tmp_path: Path) -> None:
    fresh = generate(tmp_path)
    names = sorted(p.name for p in fresh)
    assert names == ["parallax_pb2.py", "parallax_pb2.pyi", "parallax_pb2_grpc.py"]
    stale = [p.name for p in fresh if p.read_bytes() != (COMMITTED / p.name).read_bytes()]
    assert not stale, (
        f"{', '.join(stale)} differ from proto/; run `.venv/bin/python -m parallax.rpc.generate`"
    )
