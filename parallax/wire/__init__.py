"""Wire encoding of tensors: raw bytes plus dtype and shape, validated on decode."""

from parallax.wire.codec import WIRE_DTYPES, decode_tensor, dtype_from_name, encode_tensor

__all__ = ["WIRE_DTYPES", "decode_tensor", "dtype_from_name", "encode_tensor"]
