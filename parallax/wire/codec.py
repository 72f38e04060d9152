"""Tensor <-> `pb.Tensor`: raw little-endian bytes, a dtype name and a shape.

Decoding is the trust boundary of the data path: every field a peer sends is
checked (dtype, rank, hidden size, row count, byte length, size cap) before a
single byte is interpreted, and failures raise `InvalidArgument`, which the
servers turn into gRPC INVALID_ARGUMENT.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable

import numpy as np
import torch

from parallax.errors import InvalidArgument
from parallax.rpc import parallax_pb2 as pb

WIRE_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
DEFAULT_ALLOWED = ("float32", "bfloat16", "float16")

# Same-width integer views: numpy has no bfloat16, and going through an integer
# view keeps byte handling uniform for every dtype.
_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32}
_LITTLE = sys.byteorder == "little"


def dtype_from_name(name: str) -> torch.dtype:
    try:
        return WIRE_DTYPES[name]
    except KeyError:
        raise InvalidArgument(
            f"unknown wire dtype {name!r}; use one of {', '.join(WIRE_DTYPES)}"
        ) from None


def _name_of(dtype: torch.dtype) -> str:
    for name, dt in WIRE_DTYPES.items():
        if dt == dtype:
            return name
    raise InvalidArgument(
        f"cannot send tensors of dtype {dtype} on the wire; use one of {', '.join(WIRE_DTYPES)}"
    )


def encode_tensor(t: torch.Tensor, wire_dtype: torch.dtype | None = None) -> pb.Tensor:
    """Serialize `t` (cast to `wire_dtype` if given). Copies once, into the message bytes."""
    if wire_dtype is not None and t.dtype != wire_dtype:
        t = t.to(wire_dtype)
    name = _name_of(t.dtype)
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    raw = flat.view(_INT_VIEW[flat.element_size()]).numpy()
    if not _LITTLE:
        raw = raw.byteswap()
    return pb.Tensor(data=raw.tobytes(), dtype=name, shape=list(t.shape))


def decode_tensor(
    msg: pb.Tensor,
    *,
    hidden_size: int,
    rows: int | None = None,
    allowed_dtypes: Iterable[str] = DEFAULT_ALLOWED,
    max_bytes: int,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """Validate and deserialize a `[rows, hidden_size]` tensor; returns `out_dtype`.

    The result owns its memory (one copy out of the message's read-only bytes), so
    callers may keep it after the message is gone and write into it.
    """
    allowed = tuple(allowed_dtypes)
    if msg.dtype not in allowed:
        raise InvalidArgument(
            f"tensor dtype {msg.dtype!r} is not accepted here; send one of {', '.join(allowed)}"
        )
    dtype = dtype_from_name(msg.dtype)
    shape = tuple(msg.shape)
    if len(shape) != 2:
        raise InvalidArgument(
            f"tensor must be 2-D [tokens, hidden_size={hidden_size}], got shape {list(shape)}"
        )
    n_rows, width = shape
    if width != hidden_size:
        raise InvalidArgument(
            f"tensor hidden size {width} does not match the model's {hidden_size}; "
            "are both nodes serving the same model?"
        )
    if n_rows < 0:
        raise InvalidArgument(f"tensor shape {list(shape)} has a negative row count")
    if rows is not None and n_rows != rows:
        raise InvalidArgument(f"tensor has {n_rows} rows but the batch's chunks add up to {rows}")
    itemsize = dtype.itemsize
    expected = math.prod(shape) * itemsize
    if expected > max_bytes:
        raise InvalidArgument(
            f"tensor of shape {list(shape)} ({expected} bytes) exceeds the {max_bytes}-byte "
            "limit; send smaller batches (lower --max-batch-tokens)"
        )
    if len(msg.data) != expected:
        raise InvalidArgument(
            f"tensor data is {len(msg.data)} bytes but shape {list(shape)} of {msg.dtype} "
            f"needs {expected}"
        )
    if expected == 0:
        return torch.empty(shape, dtype=out_dtype)
    if _LITTLE:
        raw = torch.frombuffer(bytearray(msg.data), dtype=_INT_VIEW[itemsize])
    else:
        raw = torch.from_numpy(
            np.frombuffer(msg.data, dtype=f"<i{itemsize}").astype(f"=i{itemsize}")
        )
    t = raw.view(dtype).view(shape)
    return t if dtype == out_dtype else t.to(out_dtype)
