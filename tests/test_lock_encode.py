"""format/lock.py ``encode`` against the documented layout, field by field, over the whole
u64 range of every field and past it (counters and the generation wrap): the fast pack
(complements as signed words) and its masked fallback must give the same bytes."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from segwal.format import lock
from segwal.format.layout import crc32c

MASK = (1 << 64) - 1
EDGES = [0, 1, 2**62, 2**63 - 2, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1]
u64 = st.one_of(st.sampled_from(EDGES), st.integers(0, MASK))
wrapping = st.one_of(u64, st.integers(2**64, 2**66))


def expected(pid: int, durable: int, rewinds: int, counters: tuple[int, ...], gen: int) -> bytes:
    body = struct.pack("<6Q", *(c & MASK for c in counters))
    return (
        struct.pack(
            "<8sQQQQQ", b"SWLOCK01", pid, durable, ~durable & MASK, rewinds, ~rewinds & MASK
        )
        + body
        + struct.pack("<I", crc32c(body))
        + struct.pack("<QQ", gen & MASK, ~gen & MASK)
    )


@given(
    pid=st.integers(0, 2**22),
    durable=u64,
    rewinds=u64,
    counters=st.tuples(*[wrapping] * 6),
    generation=wrapping,
)
def test_encode_is_the_documented_bytes(
    pid: int, durable: int, rewinds: int, counters: tuple[int, ...], generation: int
) -> None:
    raw = lock.encode(pid, durable, rewinds, counters, generation)
    assert raw == expected(pid, durable, rewinds, counters, generation)
    found = lock.decode(raw)
    assert found is not None
    assert (found.durable_lsn, found.rewinds) == (durable, rewinds)
    assert found.counters == tuple(c & MASK for c in counters)
    assert found.generation == ((generation & MASK) or None)
