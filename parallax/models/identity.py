"""A model's content identity: what the coordinator announces and every node checks.

Hashing every weight byte would take minutes on a large model, at each start of
each process. The identity covers instead, exactly:

- the configuration: a GGUF file's metadata (tokenizer included), or a Hugging
  Face folder's JSON files and `tokenizer.model`;
- the tensor index: every tensor's name, shape, dtype and place in the file;

and, by sampling, the weights: the first and last 64 KiB of every tensor (all of
a smaller one). Another quantisation, another fine-tune or a re-trained model
changes every tensor, so the samples catch it; a different shape, dtype or
config is caught exactly. What is not caught is a deliberate edit in the middle
of a large tensor, which the gateway's spot checks (coordinator/verify) are for.
The cost is reading 128 KiB per tensor: tens of MB for a 7B model.

Each part has its own digest, so a node can say which part of which file
differs. Torch-free: the gateway and every node compute it at start.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

from parallax.errors import ModelFormatError
from parallax.models.gguf_file import read_gguf
from parallax.models.registry import ResolvedModel

SAMPLE_BYTES = 64 * 1024  # from each end of each tensor


class ModelMismatch(ModelFormatError):
    """This node's model is not the one the coordinator serves."""


@dataclass(frozen=True)
class ModelIdentity:
    digest: str  # sha256 hex over every part
    parts: Mapping[str, str]  # "file: what" -> sha256 hex

    @classmethod
    def of_parts(cls, parts: Mapping[str, str]) -> ModelIdentity:
        h = hashlib.sha256()
        for key in sorted(parts):
            h.update(f"{key}\0{parts[key]}\n".encode())
        return cls(h.hexdigest(), MappingProxyType(dict(parts)))

    def mismatch(self, other: Mapping[str, str], path: str | Path, served: str) -> str:
        """'' when `other` (the parts of the model at `path`) is this model; else why
        not, naming the parts that differ and how to fix it."""
        theirs = ModelIdentity.of_parts(other)
        if theirs.digest == self.digest:
            return ""
        # Config, metadata and index first: they say the most about what is different.
        keys = sorted(set(self.parts) | set(other), key=lambda k: (": tensor " in k, k))
        differ = [k for k in keys if self.parts.get(k) != other.get(k)]
        more = f" and {len(differ) - 4} more" if len(differ) > 4 else ""
        return (
            f"{path} is not the model the coordinator serves ({served}, sha256 "
            f"{self.digest[:16]}; this one {theirs.digest[:16]}): these parts differ: "
            f"{', '.join(differ[:4])}{more}. Give --model a copy of the coordinator's "
            "exact file (or folder), or start the node without --model to use the "
            "coordinator's path"
        )


class _Everything:
    """Keep every string array of a GGUF header: the identity covers all metadata."""

    def __contains__(self, key: object) -> bool:
        return True


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sample(f: BinaryIO, offset: int, nbytes: int) -> str:
    h = hashlib.sha256()
    if nbytes <= 2 * SAMPLE_BYTES:
        f.seek(offset)
        h.update(f.read(nbytes))
    else:
        f.seek(offset)
        h.update(f.read(SAMPLE_BYTES))
        f.seek(offset + nbytes - SAMPLE_BYTES)
        h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()


def _gguf_parts(path: Path) -> Iterator[tuple[str, str]]:
    gf = read_gguf(path, string_arrays=_Everything())
    yield "gguf: metadata", _sha(repr(sorted(gf.metadata.items())).encode())
    index = [(t.name, t.shape, int(t.ggml_type), t.offset, t.nbytes) for t in gf.tensors.values()]
    yield "gguf: index", _sha(repr(index).encode())
    with path.open("rb") as f:
        for t in gf.tensors.values():
            yield f"gguf: tensor {t.name}", _sample(f, t.offset, t.nbytes)


def _safetensors_parts(path: Path) -> Iterator[tuple[str, str]]:
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ModelFormatError(f"{path} is truncated: no safetensors header")
        (size,) = struct.unpack("<Q", raw)
        header_bytes = f.read(size)
        yield f"{path.name}: index", _sha(header_bytes)
        try:
            header = json.loads(header_bytes)
        except ValueError as e:
            raise ModelFormatError(f"{path}: the safetensors header is not JSON ({e})") from e
        for name, entry in sorted(header.items()):
            if name == "__metadata__":
                continue
            begin, end = entry["data_offsets"]
            yield f"{path.name}: tensor {name}", _sample(f, 8 + size + begin, end - begin)


def _hf_parts(folder: Path) -> Iterator[tuple[str, str]]:
    for path in sorted(folder.iterdir()):
        if path.suffix == ".json" or path.name == "tokenizer.model":
            yield path.name, _sha(path.read_bytes())
        elif path.suffix == ".safetensors":
            yield from _safetensors_parts(path)


def model_identity(resolved: ResolvedModel) -> ModelIdentity:
    parts = _gguf_parts(resolved.path) if resolved.format == "gguf" else _hf_parts(resolved.path)
    return ModelIdentity.of_parts(dict(parts))


def check_same_model(ours: ModelIdentity, theirs: ModelIdentity, path: Path, served: str) -> None:
    """Raise `ModelMismatch` naming what differs when `ours` is not `theirs` (served)."""
    why = theirs.mismatch(ours.parts, path, served)
    if why:
        raise ModelMismatch(why)
