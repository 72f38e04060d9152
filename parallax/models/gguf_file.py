"""A GGUF file's metadata and tensor table, read without touching tensor data.

`gguf.GGUFReader` builds a numpy view per array element, which costs seconds
on a 49k-token vocabulary; the gateway and every node read this header at
startup, so we walk it once with `struct` over a memory map instead. Tensor
bytes stay on disk until `tensor_bytes` slices them out of the same map.

Every bound is checked against the file size, so a truncated or random file
raises `ModelFormatError` instead of a struct or numpy error.
"""

from __future__ import annotations

import struct
from collections.abc import Container, Mapping
from dataclasses import dataclass
from math import prod
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from parallax.errors import ModelFormatError

GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)  # v1 used 32-bit counts and has not been written since 2023
DEFAULT_ALIGNMENT = 32  # llama.cpp's, when `general.alignment` is absent

# Fixed-width metadata value types -> struct format. 8 is string, 9 is array.
_SCALAR = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_F32, _STRING, _ARRAY = 6, 8, 9


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's place in the file. `shape` is in torch order (slowest dim first)."""

    name: str
    shape: tuple[int, ...]
    ggml_type: GGMLQuantizationType
    offset: int  # absolute, from the start of the file
    nbytes: int

    def row_bytes_shape(self) -> tuple[int, ...]:
        """Shape of the raw bytes: rows as in `shape`, the last dim in stored bytes."""
        block, block_bytes = GGML_QUANT_SIZES[self.ggml_type]
        return (*self.shape[:-1], self.shape[-1] // block * block_bytes)


@dataclass(frozen=True)
class GgufFile:
    path: Path
    metadata: Mapping[str, Any]
    tensors: Mapping[str, TensorInfo]

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    def tensor_bytes(self, info: TensorInfo) -> np.ndarray:
        """The tensor's raw bytes as a read-only memmap view; nothing is read until used."""
        blob = np.memmap(self.path, mode="r", dtype=np.uint8)
        return blob[info.offset : info.offset + info.nbytes].reshape(info.row_bytes_shape())


class _Cursor:
    """Bounds-checked little-endian reads over the mapped file."""

    def __init__(self, blob: np.ndarray, path: Path) -> None:
        self.blob, self.path, self.pos = blob, path, 0

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > len(self.blob):
            raise ModelFormatError(
                f"{self.path} is truncated or corrupt: {what} at byte {self.pos} runs past the end "
                f"of the file ({len(self.blob)} bytes); download the file again"
            )

    def unpack(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize(fmt)
        self.need(size, what)
        values = struct.unpack_from(fmt, self.blob, self.pos)
        self.pos += size
        return values

    def string(self, what: str) -> str:
        (length,) = self.unpack("<Q", what)
        self.need(length, what)
        raw = bytes(self.blob[self.pos : self.pos + length])
        self.pos += length
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ModelFormatError(
                f"{self.path}: {what} is not valid UTF-8; the file is corrupt"
            ) from e

    def value(self, kind: int, key: str, keep_strings: bool) -> Any:
        if kind == _F32:
            # The shortest repr that round-trips float32: 1e-05, not 9.999999747378752e-06.
            return float(str(np.float32(self.unpack("<f", key)[0])))
        if kind in _SCALAR:
            return self.unpack(_SCALAR[kind], key)[0]
        if kind == _STRING:
            return self.string(key)
        if kind != _ARRAY:
            raise ModelFormatError(f"{self.path}: metadata {key!r} has unknown value type {kind}")
        elem, count = self.unpack("<IQ", key)
        if elem in _SCALAR:
            width = struct.calcsize(_SCALAR[elem])
            self.need(count * width, key)
            values = np.frombuffer(
                self.blob, dtype=np.dtype(_SCALAR[elem]), count=count, offset=self.pos
            )
            self.pos += count * width
            return values.tolist()
        if elem != _STRING:
            raise ModelFormatError(f"{self.path}: metadata {key!r} is an array of type {elem}")
        if keep_strings:
            return [self.string(key) for _ in range(count)]
        for _ in range(count):  # skipped, but strings are variable-length: walk them
            (length,) = self.unpack("<Q", key)
            self.need(length, key)
            self.pos += length
        return count


def read_gguf(path: str | Path, string_arrays: Container[str] = ()) -> GgufFile:
    """Parse the header. String arrays are kept only for keys in `string_arrays`
    (the vocabulary and merges); any other string array is replaced by its length."""
    path = Path(path)
    try:
        blob = np.memmap(path, mode="r", dtype=np.uint8)
    except (OSError, ValueError) as e:  # empty files cannot be mapped
        raise ModelFormatError(f"{path} cannot be read as a GGUF file: {e}") from e
    cur = _Cursor(blob, path)
    if bytes(blob[:4]) != GGUF_MAGIC:
        raise ModelFormatError(
            f"{path} is not a GGUF file (it does not start with b'GGUF'); "
            "pass a .gguf model file or a Hugging Face folder"
        )
    cur.pos = 4
    version, n_tensors, n_kv = cur.unpack("<IQQ", "header")
    if version not in GGUF_VERSIONS:
        raise ModelFormatError(f"{path} is GGUF version {version}; only versions 2 and 3 are read")
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string("metadata key")
        (kind,) = cur.unpack("<I", key)
        metadata[key] = cur.value(kind, key, key in string_arrays)
    raw = []
    for _ in range(n_tensors):
        name = cur.string("tensor name")
        (n_dims,) = cur.unpack("<I", name)
        if n_dims > 8:
            raise ModelFormatError(
                f"{path}: tensor {name!r} claims {n_dims} dimensions; corrupt file"
            )
        dims = cur.unpack(f"<{n_dims}Q", name)
        kind, offset = cur.unpack("<IQ", name)
        raw.append((name, tuple(reversed(dims)), kind, offset))
    align = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))
    data_start = (cur.pos + align - 1) // align * align
    tensors = {}
    for name, shape, kind, offset in raw:
        info = _tensor_info(path, name, shape, kind, data_start + offset)
        cur.pos = info.offset
        cur.need(info.nbytes, f"data of tensor {name!r}")
        tensors[name] = info
    return GgufFile(path, MappingProxyType(metadata), MappingProxyType(tensors))


def _tensor_info(
    path: Path, name: str, shape: tuple[int, ...], kind: int, offset: int
) -> TensorInfo:
    try:
        qtype = GGMLQuantizationType(kind)
        block, block_bytes = GGML_QUANT_SIZES[qtype]
    except (ValueError, KeyError) as e:
        raise ModelFormatError(
            f"{path}: tensor {name!r} has ggml type {kind}, which this gguf version cannot read"
        ) from e
    elements = prod(shape)
    if not shape or shape[-1] % block:
        raise ModelFormatError(
            f"{path}: tensor {name!r} shape {shape} does not fit {qtype.name} blocks"
        )
    return TensorInfo(name, shape, qtype, offset, elements // block * block_bytes)
