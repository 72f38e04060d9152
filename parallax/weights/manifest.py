"""A model file's weight manifest: its regions and one sha256 per chunk of each.

The coordinator builds it from its own GGUF file and hands it out; a node that joins
without the model fetches only the regions its layers need and checks every chunk
against it, so whoever serves the bytes is never trusted. Regions are the file's
header (metadata, tokenizer, tensor index: everything before the tensor data) and
each tensor's stored bytes, quantized blocks as they are. Offsets are the file's own,
so a fetched copy lays each region where the original has it and the GGUF reader
and loaders read it unchanged. Torch-free: the coordinator builds it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from parallax.errors import ModelFormatError
from parallax.models.gguf_file import read_gguf
from parallax.rpc import parallax_pb2 as pb

CHUNK_BYTES = 1 << 20  # 1 MiB: a chunk is the unit of hashing, fetching and resuming
HEADER = "gguf:header"
DIGEST_BYTES = 32


@dataclass(frozen=True)
class Region:
    name: str
    offset: int  # bytes from the start of the file
    nbytes: int
    chunk_sha256: tuple[bytes, ...]

    def chunk_span(self, index: int, chunk_bytes: int) -> tuple[int, int]:
        """(file offset, length) of chunk `index`."""
        start = index * chunk_bytes
        return self.offset + start, min(chunk_bytes, self.nbytes - start)


@dataclass(frozen=True)
class Manifest:
    model_digest: str
    file_bytes: int
    chunk_bytes: int
    regions: Mapping[str, Region]

    def to_pb(self, sources: tuple[str, ...] = ()) -> pb.WeightManifest:
        return pb.WeightManifest(
            model_digest=self.model_digest,
            format="gguf",
            file_bytes=self.file_bytes,
            chunk_bytes=self.chunk_bytes,
            regions=[
                pb.WeightRegion(
                    name=r.name, offset=r.offset, nbytes=r.nbytes, chunk_sha256=r.chunk_sha256
                )
                for r in self.regions.values()
            ],
            sources=sources,
        )

    @classmethod
    def from_pb(cls, m: pb.WeightManifest) -> Manifest:
        """Validate a manifest off the wire: every region inside the file, chunk counts
        and digest sizes consistent, so a fetch never writes outside the file."""
        if m.format != "gguf":
            raise ModelFormatError(
                f"the coordinator's model is in format {m.format!r}; only GGUF models can "
                "be fetched from peers: give this node the model with --model"
            )
        if not 0 < m.chunk_bytes <= 16 * CHUNK_BYTES:
            raise ModelFormatError(f"weight manifest has chunk size {m.chunk_bytes}; corrupt")
        regions: dict[str, Region] = {}
        for r in m.regions:
            chunks = -(-r.nbytes // m.chunk_bytes)
            bad = r.offset + r.nbytes > m.file_bytes or len(r.chunk_sha256) != chunks
            bad = bad or any(len(d) != DIGEST_BYTES for d in r.chunk_sha256)
            if bad or r.name in regions or not r.name:
                raise ModelFormatError(f"weight manifest region {r.name!r} is inconsistent")
            regions[r.name] = Region(r.name, r.offset, r.nbytes, tuple(r.chunk_sha256))
        if HEADER not in regions or regions[HEADER].offset != 0:
            raise ModelFormatError("weight manifest has no GGUF header region")
        return cls(m.model_digest, m.file_bytes, m.chunk_bytes, MappingProxyType(regions))


def file_regions(path: Path) -> dict[str, tuple[int, int]]:
    """name -> (offset, nbytes) of a GGUF file's header and tensors (no data read)."""
    gf = read_gguf(path)
    data_start = min((t.offset for t in gf.tensors.values()), default=path.stat().st_size)
    out = {HEADER: (0, data_start)}
    out.update({t.name: (t.offset, t.nbytes) for t in gf.tensors.values()})
    return out


def build_manifest(path: Path, model_digest: str, chunk_bytes: int = CHUNK_BYTES) -> Manifest:
    """Hash every chunk of a GGUF file (reads the whole file once)."""
    regions: dict[str, Region] = {}
    with path.open("rb") as f:
        for name, (offset, nbytes) in file_regions(path).items():
            f.seek(offset)
            digests = []
            for start in range(0, nbytes, chunk_bytes):
                data = f.read(min(chunk_bytes, nbytes - start))
                digests.append(hashlib.sha256(data).digest())
            regions[name] = Region(name, offset, nbytes, tuple(digests))
    return Manifest(model_digest, path.stat().st_size, chunk_bytes, MappingProxyType(regions))
