"""A node's bytes of the model as it holds them, from its compute dtype and weight format.

Pure arithmetic over the `ModelSpec` (no torch, nothing loaded), so a node reports it
at join before it has the weights, the coordinator checks what a stranger claims
against it, and `parallax plan` sizes nodes with it. It follows what `node/weights`
really holds (a test compares it with the bytes of loaded models in every format):

- float weights (`--weights auto|fp32|bf16`, or a quantized GGUF under `auto`, which is
  dequantized): every tensor in the compute dtype;
- `q8`: each projection int8 per element plus one bfloat16 scale per output row;
- `q4`: each projection int4 (two per byte) plus a bfloat16 scale and zero per 32
  inputs of a row; a fused projection one of whose parts the int4 kernel cannot take
  (rows not a multiple of 16, inputs not of 32) is q8 as a whole;
- with q8 and q4 the embedding and the head are q8; norms and biases stay in the
  compute dtype, and so does the KV cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from parallax.errors import InvalidArgument
from parallax.models.spec import ModelSpec

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# Weight formats as held (`auto` resolved): floats by name, or kept quantized.
FLOAT_WEIGHTS = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
HELD_FORMATS = ("fp32", "bf16", "fp16", "q8", "q4")
Q4_GROUP = 32  # inputs sharing one int4 scale and zero (node/model/quant.py)
Q4_ROWS = 16  # the int4 kernel packs rows in multiples of this
SCALE_BYTES = 2  # scales and zeros of the integer kernels are bfloat16
# How far a node's reported bytes may stray from this formula for its claimed format
# before the coordinator refuses the join: versions may round differently, never 25%.
PLAUSIBLE_FACTOR = 1.25


@dataclass(frozen=True)
class Footprint:
    """Bytes of the model on one node, in its own dtype and weight format."""

    weight_bytes: float  # one decoder layer's weights
    kv_bytes_per_token: float  # one layer's K and V for one token
    embedding_bytes: float  # the token embedding (on the node holding layer 0)
    head_bytes: float  # final norm plus lm_head (on the node holding the last layer)
    dtype: str = "float32"  # compute dtype: float32 | bfloat16 | float16
    weights: str = "fp32"  # as held: fp32 | bf16 | fp16 | q8 | q4

    def __post_init__(self) -> None:
        for f in fields(self)[:4]:
            value = getattr(self, f.name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise InvalidArgument(f"footprint {f.name}={value!r} must be a positive number")
        if self.dtype not in DTYPE_BYTES:
            raise InvalidArgument(
                f"footprint dtype={self.dtype!r} is not one of {', '.join(DTYPE_BYTES)}"
            )
        if self.weights not in HELD_FORMATS:
            raise InvalidArgument(
                f"footprint weights={self.weights!r} is not one of {', '.join(HELD_FORMATS)}"
            )

    @property
    def label(self) -> str:
        """How people read it: `bf16`, or `q4/float32` (quantized, compute dtype)."""
        if self.weights in ("q8", "q4"):
            return f"{self.weights}/{self.dtype}"
        return self.weights


def held_format(weights: str, dtype: str) -> str:
    """The format a node holds for `--weights` under compute `dtype` (`auto`: floats)."""
    if dtype not in DTYPE_BYTES:
        raise InvalidArgument(f"dtype {dtype!r} is not one of {', '.join(DTYPE_BYTES)}")
    if weights == "auto":
        return FLOAT_WEIGHTS[dtype]
    if weights not in HELD_FORMATS:
        raise InvalidArgument(
            f"weight format {weights!r} is not one of auto, {', '.join(HELD_FORMATS)}"
        )
    return weights


def _quant_bytes(kind: str, rows: list[int], cols: int) -> int:
    """A fused projection of parts with `rows` output rows each, over `cols` inputs."""
    n = sum(rows)
    if kind == "q4" and cols % Q4_GROUP == 0 and all(r % Q4_ROWS == 0 for r in rows):
        return n * cols // 2 + (cols // Q4_GROUP) * n * 2 * SCALE_BYTES
    return n * cols + n * SCALE_BYTES


def footprint(spec: ModelSpec, dtype: str, weights: str = "auto") -> Footprint:
    """The bytes a node running `dtype` with `--weights weights` holds of `spec`."""
    held = held_format(weights, dtype)
    d = DTYPE_BYTES[dtype]
    h, i, v = spec.hidden_size, spec.intermediate_size, spec.vocab_size
    q, kv = spec.num_attention_heads * spec.head_dim, spec.num_key_value_heads * spec.head_dim
    if held in ("q8", "q4"):
        projections = (
            _quant_bytes(held, [q, kv, kv], h)
            + _quant_bytes(held, [h], q)
            + _quant_bytes(held, [i, i], h)
            + _quant_bytes(held, [h], i)
        )
        small = 2 * h + (2 * spec.head_dim if spec.qk_norm else 0)
        small += q + 2 * kv if spec.attention_bias else 0
        layer = projections + small * d
        table = _quant_bytes("q8", [v], h)
    else:
        if d != {"fp32": 4, "bf16": 2, "fp16": 2}[held]:
            raise InvalidArgument(
                f"weights {held} with compute dtype {dtype}: weights and compute share one "
                "dtype; pass the matching --dtype or --weights auto"
            )
        layer, table = spec.bytes_per_layer(d), v * h * d
    return Footprint(
        weight_bytes=float(layer),
        kv_bytes_per_token=float(spec.kv_bytes_per_token_per_layer(d)),
        embedding_bytes=float(table),
        head_bytes=float(table + h * d),
        dtype=dtype,
        weights=held,
    )


def implausible(spec: ModelSpec, reported: Footprint) -> str:
    """Why `reported` cannot be what a node holds of `spec` in the format it claims
    ("" when it is plausible): each figure within PLAUSIBLE_FACTOR of the formula."""
    want = footprint(spec, reported.dtype, reported.weights)
    for f in fields(Footprint)[:4]:
        got, expect = getattr(reported, f.name), getattr(want, f.name)
        if not expect / PLAUSIBLE_FACTOR <= got <= expect * PLAUSIBLE_FACTOR:
            return (
                f"the node reports {f.name}={got:,.0f} for {reported.label} weights, but "
                f"{spec.family} with this shape holds {expect:,.0f} in that format (more than "
                f"{PLAUSIBLE_FACTOR}x off): upgrade the node to this coordinator's version, "
                "or join with the --dtype/--weights it really runs"
            )
    return ""
