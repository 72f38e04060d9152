"""Generate the gRPC stubs in this package from `proto/`.

Run by `make stubs`. The stubs are committed so that a plain `pip install`
works; `tests/test_stubs.py` checks that they match `proto/`.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parents[2] / "proto"


def generate(out_dir: Path) -> list[Path]:
    from grpc_tools import protoc  # build-time only

    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *map(str, protos),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed; see the messages above")
    return sorted((out_dir / "parallax" / "rpc").glob("*_pb2*.py*"))


def main() -> int:
    out = PROTO_ROOT.parent
    for p in generate(out):
        print(f"generated {p.relative_to(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
