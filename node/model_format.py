"""What a node tells the coordinator at join about how it holds the model: its compute
dtype, its weight format, and its bytes of the model in them (without loading it: the
formula of parallax/models/footprint.py, which follows what node/weights holds)."""

from __future__ import annotations

import torch

from node.engine.engine import DTYPES
from parallax.models.footprint import footprint, held_format
from parallax.models.spec import ModelSpec
from parallax.rpc import parallax_pb2 as pb

_NAMES = {v: k for k, v in DTYPES.items()}


def model_format(dtype: torch.dtype, weights: str, spec: ModelSpec | None) -> pb.ModelFormat:
    """The Join's `format`. Without the model's shape (no --model: the node learns the
    model from the coordinator) the bytes stay 0 and the coordinator computes them."""
    name = _NAMES[dtype]
    if spec is None:
        return pb.ModelFormat(dtype=name, weights=held_format(weights, name))
    fp = footprint(spec, name, weights)
    return pb.ModelFormat(
        dtype=fp.dtype,
        weights=fp.weights,
        layer_bytes=fp.weight_bytes,
        kv_bytes_per_token=fp.kv_bytes_per_token,
        embedding_bytes=fp.embedding_bytes,
        head_bytes=fp.head_bytes,
    )
