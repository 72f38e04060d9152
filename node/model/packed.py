"""bfloat16 projections held in oneDNN's blocked layout on CPU (reordered once at load).

`F.linear` on a plain bf16 weight pays oneDNN's reorder of the weight on every call.
Reordered once, the same matmul measured 33 -> 21 ms for a 16-row step over
SmolLM2's 30 layers (1 thread, weights cold in cache), with bit-equal outputs at 1, 3,
16, 40 and 512 rows. The packed weight replaces the dense one (same bytes).

A head tied to the embedding is packed too, and the embedding then reads its rows out
of the packed table (`PackedEmbedding`): the table is held once, in oneDNN's layout.
"""

from __future__ import annotations

import ctypes
import itertools
import weakref

import torch
from torch import nn

_PACK_ROWS = 16  # the row count oneDNN tunes the layout for; any count runs


def can_pack(device: str, dtype: torch.dtype) -> bool:
    """oneDNN (mkldnn) is in this torch build and the weights are bf16 on a CPU."""
    return (
        torch.device(device).type == "cpu"
        and dtype == torch.bfloat16
        and torch.backends.mkldnn.is_available()
    )


# Packed weights by key, for compiled graphs: an opaque oneDNN tensor cannot be a graph
# input, so the graph passes the key (a tensor, so one graph serves every layer) and the
# op looks the weight up. Weak: a dropped model frees its weights.
_BY_KEY: weakref.WeakValueDictionary[int, torch.Tensor] = weakref.WeakValueDictionary()
_KEYS = itertools.count()


@torch.library.custom_op("parallax::packed_linear", mutates_args=())
def packed_linear(
    x: torch.Tensor, key: torch.Tensor, bias: torch.Tensor | None, out_features: int
) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, _BY_KEY[int(key)], bias, "none", [], "")


@packed_linear.register_fake
def _(x, key, bias, out_features):
    return x.new_empty(x.shape[0], out_features)


class PackedLinear(nn.Module):
    """y = x W^T + b with W in oneDNN's layout. The state dict still shows a dense
    `weight`, so a shard that reuses this layer's tensors (`load_shard_model(reuse=)`)
    loads it like any other."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach()
        self.out_features, self.in_features = w.shape
        # A plain attribute, not a buffer: an opaque oneDNN tensor has no storage to
        # save, move or hash.
        self.packed = torch.ops.mkldnn._reorder_linear_weight(w, _PACK_ROWS)
        self.packed_bytes = w.numel() * w.element_size()
        self.bias = linear.bias
        key = next(_KEYS)
        _BY_KEY[key] = self.packed
        self.key = torch.tensor(key)  # not a buffer: no bytes, no state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead, x2 = x.shape[:-1], x.reshape(-1, self.in_features)
        if torch.compiler.is_compiling():
            y = torch.ops.parallax.packed_linear(x2, self.key, self.bias, self.out_features)
        else:
            y = torch.ops.mkldnn._linear_pointwise(x2, self.packed, self.bias, "none", [], "")
        return y.view(*lead, self.out_features)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "weight"] = self.packed.to_dense()


def _rows_view(packed: torch.Tensor, dense: torch.Tensor) -> torch.Tensor | None:
    """A dense view [ceil(O / a), I / 32, 16, a, 2] over the memory of `packed`
    (oneDNN's `AB16b{a}a2b` blocked layout: `a` rows per block, the last block padded)
    from which `dense`'s rows can be read, or None when oneDNN chose another layout on
    this CPU (checked against every element of `dense`, so a layout we do not know is
    never read wrongly)."""
    o, i = dense.shape
    nbytes = torch.ops.mkldnn._nbytes(packed)
    if i % 32:
        return None
    buf = (ctypes.c_uint8 * nbytes).from_address(torch.ops.mkldnn.data_ptr(packed))
    flat = torch.frombuffer(buf, dtype=dense.dtype)
    for a in (32, 64, 16):  # AMX picks 32-row blocks (measured); the others as fallbacks
        blocks = -(-o // a)
        if blocks * a * i != flat.numel():
            continue
        view = flat.view(blocks, i // 32, 16, a, 2)
        if torch.equal(_dense_rows(view)[:o], dense):
            return view
    return None


def _dense_rows(view: torch.Tensor) -> torch.Tensor:
    """The [blocks * a, I] rows of a `_rows_view` (padding rows included)."""
    blocks, _, _, a, _ = view.shape
    return view.permute(0, 3, 1, 2, 4).reshape(blocks * a, -1)


class PackedEmbedding(nn.Module):
    """Embedding rows read from a tied head's packed table (no second copy of it)."""

    def __init__(self, head: PackedLinear, rows: torch.Tensor):
        super().__init__()
        self.head_packed = head.packed  # keeps the memory `rows` views alive
        self.rows = rows  # [O / a, I / 32, 16, a, 2] (`_rows_view`)
        self.block = rows.shape[3]
        self.embedding_dim = head.in_features
        self.num_embeddings = head.out_features

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # Row r lives at block r // a, lane r % a: [T, I / 32, 16, 2] -> [T, I] in order.
        picked = self.rows[ids // self.block, :, :, ids % self.block]
        return picked.reshape(*ids.shape, self.embedding_dim)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        dense = _dense_rows(self.rows)[: self.num_embeddings]
        destination[prefix + "weight"] = dense.clone()


def pack_linears(model: nn.Module, embedding: torch.Tensor | None = None) -> int:
    """Swap every bf16 `nn.Linear` of `model` for a `PackedLinear`; returns how many.

    A head tied to `embedding` (same storage) is packed only if the embedding can read
    its rows from the packed table (`PackedEmbedding`); otherwise it stays dense, since
    packing it would hold the table twice. The tied head at 16 rows: 3.8 -> 2.2 ms per
    call (SmolLM2's 49152 x 576, 1 thread, microbenchmark).
    """
    tied = embedding.data_ptr() if embedding is not None else None
    swaps, tied_name = [], None
    for name, m in model.named_modules():
        if type(m) is nn.Linear and m.weight.dtype == torch.bfloat16:
            if m.weight.data_ptr() != tied:
                swaps.append(name)
            else:
                tied_name = name
    for name in swaps:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, PackedLinear(getattr(parent, child)))
    if tied_name is not None and _pack_tied(model, tied_name, embedding):
        swaps.append(tied_name)
    return len(swaps)


def _pack_tied(model: nn.Module, head_name: str, embedding: torch.Tensor) -> bool:
    """Pack the tied head and point the embedding at its rows; False: left dense."""
    embed_name = next(
        (
            n
            for n, m in model.named_modules()
            if type(m) is nn.Embedding and m.weight.data_ptr() == embedding.data_ptr()
        ),
        None,
    )
    if embed_name is None:
        return False
    head = PackedLinear(model.get_submodule(head_name))
    rows = _rows_view(head.packed, embedding.detach())
    if rows is None:
        return False
    for name, module in ((head_name, head), (embed_name, PackedEmbedding(head, rows))):
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, module)
    return True
