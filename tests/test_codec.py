"""The tensor wire codec: exact round trips and every malformed message rejected."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from parallax.errors import InvalidArgument
from parallax.rpc import parallax_pb2 as pb
from parallax.wire.codec import decode_tensor, encode_tensor

H = 8
MAX = 1 << 20
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def decode(msg: pb.Tensor, **kw) -> torch.Tensor:
    args = {"hidden_size": H, "max_bytes": MAX, "out_dtype": torch.float32} | kw
    return decode_tensor(msg, **args)


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_is_exact_in_the_wire_dtype(dtype: torch.dtype) -> None:
    t = torch.randn(5, H, generator=torch.Generator().manual_seed(0)).to(dtype)
    msg = encode_tensor(t)
    assert msg.dtype == str(dtype).removeprefix("torch.")
    assert list(msg.shape) == [5, H]
    assert len(msg.data) == 5 * H * dtype.itemsize
    out = decode(msg, rows=5, out_dtype=dtype)
    assert out.dtype == dtype
    assert torch.equal(out, t)
    # survives real protobuf serialization too
    again = decode(pb.Tensor.FromString(msg.SerializeToString()), out_dtype=dtype)
    assert torch.equal(again, t)


def test_cast_to_wire_dtype_and_back_to_compute_dtype() -> None:
    t = torch.tensor([[1.0, -2.5, 3.0e-3, 65504.0] * 2], dtype=torch.float32)
    msg = encode_tensor(t, wire_dtype=torch.bfloat16)
    assert msg.dtype == "bfloat16" and len(msg.data) == H * 2
    out = decode(msg, out_dtype=torch.float32)
    assert out.dtype == torch.float32
    assert torch.equal(out, t.to(torch.bfloat16).to(torch.float32))


def test_bytes_are_little_endian_ieee() -> None:
    msg = encode_tensor(torch.full((1, H), 1.0, dtype=torch.bfloat16))
    assert msg.data[:2] == b"\x80\x3f"  # bf16(1.0) = 0x3F80
    msg = encode_tensor(torch.full((1, H), 1.0, dtype=torch.float32))
    assert msg.data[:4] == b"\x00\x00\x80\x3f"


def test_decoded_tensor_owns_its_memory() -> None:
    # The node queues decoded activations past the RPC: they must not alias its bytes.
    msg = encode_tensor(torch.zeros(3, H))
    buf = bytearray(msg.data)
    out = decode(SimpleNamespace(data=buf, dtype=msg.dtype, shape=msg.shape))
    buf[0:4] = encode_tensor(torch.full((1, 1), 7.0)).data
    assert out[0, 0].item() == 0.0
    out[1, 1] = 3.0  # writable: no read-only-buffer warning, no shared state
    assert decode(msg)[1, 1].item() == 0.0


def test_empty_batch_and_non_contiguous_input() -> None:
    assert decode(encode_tensor(torch.empty(0, H)), rows=0).shape == (0, H)
    t = torch.randn(H, 4).t()  # non-contiguous [4, H]
    assert torch.equal(decode(encode_tensor(t)), t)


def test_encode_rejects_unsupported_dtype() -> None:
    with pytest.raises(InvalidArgument, match="float64"):
        encode_tensor(torch.zeros(1, H, dtype=torch.float64))


GOOD = encode_tensor(torch.zeros(2, H))


@pytest.mark.parametrize(
    ("msg", "kw", "match"),
    [
        (pb.Tensor(data=GOOD.data, dtype="float64", shape=[2, H]), {}, "not accepted"),
        (pb.Tensor(data=GOOD.data, dtype="int8", shape=[2, H]), {}, "not accepted"),
        (GOOD, {"allowed_dtypes": ("bfloat16",)}, "not accepted"),
        (pb.Tensor(data=GOOD.data, dtype="float32", shape=[2 * H]), {}, "2-D"),
        (pb.Tensor(data=GOOD.data, dtype="float32", shape=[1, 2, H]), {}, "2-D"),
        (pb.Tensor(data=GOOD.data, dtype="float32", shape=[H, 2]), {}, "hidden size 2"),
        (pb.Tensor(data=GOOD.data, dtype="float32", shape=[-2, H]), {}, "negative"),
        (GOOD, {"rows": 3}, "add up to 3"),
        (pb.Tensor(data=GOOD.data[:-1], dtype="float32", shape=[2, H]), {}, "needs 64"),
        (pb.Tensor(data=GOOD.data + b"\0" * 4, dtype="float32", shape=[2, H]), {}, "needs 64"),
        (pb.Tensor(data=GOOD.data, dtype="float32", shape=[1, H]), {}, "needs 32"),
        (GOOD, {"max_bytes": 63}, "exceeds the 63-byte"),
        (pb.Tensor(data=b"", dtype="float32", shape=[2**60, H]), {}, "exceeds"),
    ],
)
def test_malformed_tensors_are_rejected(msg: pb.Tensor, kw: dict, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        decode(msg, **kw)
