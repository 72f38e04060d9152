"""KV block bookkeeping: exhaustive properties over random operation sequences."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.engine.kv_blocks import KVBlockManager
from parallax.errors import InvalidArgument

ops = st.lists(
    st.tuples(st.sampled_from(["grow", "free"]), st.integers(0, 5), st.integers(1, 40)),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(num_blocks=st.integers(1, 12), block_size=st.integers(1, 8), ops=ops)
def test_blocks_are_never_lost_or_shared(num_blocks, block_size, ops):
    kv = KVBlockManager(num_blocks, block_size)
    for op, rid_n, length in ops:
        rid = f"r{rid_n}"
        if op == "grow":
            new_len = kv.length(rid) + length
            if kv.can_grow(rid, new_len):
                kv.grow(rid, new_len)
                assert kv.length(rid) == new_len
                slots = kv.slots(rid, 0, new_len)
                assert len(set(slots)) == new_len  # distinct slots per token
                assert all(0 <= s < num_blocks * block_size for s in slots)
            else:
                with pytest.raises(MemoryError):
                    kv.grow(rid, new_len)
        else:
            kv.free(rid)
            assert not kv.has(rid)
        kv.check_invariants()
    # Slots of different requests never collide.
    seen: set[int] = set()
    for rid in kv.requests():
        s = set(kv.slots(rid, 0, kv.length(rid)))
        assert not (s & seen)
        seen |= s
    for rid in kv.requests():
        kv.free(rid)
    assert kv.free_blocks == num_blocks


def test_shrinking_and_bad_sizes_are_rejected():
    with pytest.raises(InvalidArgument):
        KVBlockManager(0, 16)
    kv = KVBlockManager(4, 4)
    kv.grow("a", 6)
    assert kv.blocks_needed("a", 9) == 1
    with pytest.raises(InvalidArgument):
        kv.grow("a", 2)
    assert kv.free("missing") == 0
