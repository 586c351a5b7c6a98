"""The frame cache's table (log/framecache.py), on its own: which frame a lookup finds, the
rewind count it belongs to, what it evicts, and hits racing adds and evictions."""

from __future__ import annotations

import array
import os
import struct
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segwal.format import records
from segwal.format.layout import FormatError
from segwal.log.framecache import ENTRY_OVERHEAD, FrameCache
from segwal.storage.framereads import PlainFrame
from segwal.types import Record


def _payload(lsn: int, tag: bytes = b"") -> bytes:
    return tag + lsn.to_bytes(8, "little") * 4


def _frame(first: int, count: int, tag: bytes = b"") -> PlainFrame:
    """A plain frame body as a read hands it to the cache: 8 bytes of head, then the table."""
    payloads = [_payload(lsn, tag) for lsn in range(first, first + count)]
    body = b"H" * 8 + struct.pack(f"<{count}I", *map(len, payloads)) + b"".join(payloads)
    return PlainFrame(body, 8, len(body), first, count, 3, 1000 + first, 64)


def _size(count: int) -> int:
    return 8 + 4 * count + 32 * count + 8 * (count + 1) + ENTRY_OVERHEAD


def test_a_lookup_finds_the_frame_holding_the_lsn_and_nothing_between() -> None:
    cache = FrameCache(1 << 20)
    cache.add("a", 0, _frame(1, 10))
    cache.add("b", 0, _frame(21, 5))  # LSNs 11..20 are in no cached frame
    assert cache.record(7, 0) == Record(7, 3, 1001, _payload(7))
    assert cache.record(25, 0) == Record(25, 3, 1021, _payload(25))
    for lsn in (0, 11, 20, 26):
        assert cache.record(lsn, 0) is None
        assert cache.find(lsn, 0) is None
    found = cache.find(10, 0)
    assert found is not None and found.record(10) == cache.record(10, 0)
    assert cache.hits == 4


def test_a_frame_read_before_a_rewind_is_refused_and_a_rewind_empties_the_cache() -> None:
    cache = FrameCache(1 << 20)
    cache.add("old", 0, _frame(1, 10, b"old"))
    assert cache.record(5, 1) is None  # a reader after the rewind never sees old bytes
    cache.add("new", 1, _frame(1, 10, b"new"))
    assert len(cache) == 1 and cache.size == _size(10) + 3 * 10
    assert cache.record(5, 0) is None
    record = cache.record(5, 1)
    assert record is not None and record.payload == _payload(5, b"new")
    cache.add("old", 0, _frame(11, 10, b"old"))  # a slow reader from before the rewind
    assert cache.record(15, 1) is None and len(cache) == 1


def test_eviction_gives_a_frame_read_since_a_second_chance() -> None:
    cache = FrameCache(2 * _size(10) + 10)
    cache.add("s", 0, _frame(1, 10))
    cache.add("s", 0, _frame(11, 10))
    assert cache.record(3, 0) is not None  # the oldest, but read
    cache.add("s", 0, _frame(21, 10))
    assert cache.record(3, 0) is not None
    assert cache.record(13, 0) is None  # the one not read went
    assert cache.record(23, 0) is not None
    assert cache.size <= cache.limit and len(cache) == 2


def test_forget_drops_the_frames_of_a_segment() -> None:
    cache = FrameCache(1 << 20)
    cache.add("gone", 0, _frame(1, 10))
    cache.add("kept", 0, _frame(11, 10))
    cache.forget(lambda token: token == "gone")
    assert cache.record(5, 0) is None and cache.record(15, 0) is not None
    assert cache.size == _size(10)


def test_hits_racing_adds_and_evictions_are_right_or_misses() -> None:
    """Readers without the lock while writers add and evict: every record a hit returns is
    the one for its LSN (a miss is allowed, a wrong record never)."""
    cache = FrameCache(20 * _size(10))
    stop = threading.Event()
    wrong: list[tuple[int, Record]] = []
    hits = [0]

    def reader(seed: int) -> None:
        lsn = seed
        while not stop.is_set():
            lsn = (lsn * 7919 + 13) % 1000 + 1
            got = cache.record(lsn, 0)
            if got is not None:
                hits[0] += 1
                if got != Record(lsn, 3, 1000 + (lsn - 1) // 10 * 10 + 1, _payload(lsn)):
                    wrong.append((lsn, got))

    def writer() -> None:
        for _ in range(3):
            for first in range(1, 1000, 10):
                cache.add("s", 0, _frame(first, 10))

    readers = [threading.Thread(target=reader, args=(s,)) for s in (1, 2)]
    writers = [threading.Thread(target=writer) for _ in range(2)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert wrong == []
    assert hits[0] > 0
    assert cache.size <= cache.limit


@pytest.mark.skipif(
    records.cached_record_c is None and os.environ.get("CI", "") not in ("true", "1", "yes"),
    reason="segwal.format._speedups is not built",
)
@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=12), min_size=0, max_size=8),
    gaps=st.lists(st.integers(min_value=0, max_value=3), min_size=8, max_size=8),
    probes=st.lists(
        st.one_of(st.integers(min_value=-3, max_value=120), st.just(2**63), st.just(2**70))
    ),
)
def test_hypothesis_the_compiled_hit_path_matches_the_pure_one(
    sizes: list[int], gaps: list[int], probes: list[int]
) -> None:
    compiled = records.cached_record_c
    assert compiled is not None, "CI=true needs segwal.format._speedups built"
    cache = FrameCache(1 << 20)
    first = 1
    for count, gap in zip(sizes, gaps, strict=False):
        cache.add("s", 0, _frame(first + gap, count))
        first += gap + count
    table = cache._table
    for lsn in probes:
        pure = FrameCache._record_py(table, lsn)
        assert compiled(table.firsts, table.words, table.blobs, table.used, lsn) == pure
        if pure is not None:
            assert pure.payload == _payload(lsn) and type(pure) is Record


def test_the_compiled_hit_path_refuses_a_lying_table() -> None:
    compiled = records.cached_record_c
    if compiled is None:
        pytest.skip("segwal.format._speedups is not built")
    blob = b"x" * 40 + struct.pack("=3Q", 0, 20, 90)  # the second payload ends past the body
    firsts = array.array("q", [5])
    words = array.array("Q", [5, 7, 0, 0, 40])
    assert compiled(firsts, words, [blob], bytearray(1), 5) == Record(5, 0, 0, b"x" * 20)
    with pytest.raises(FormatError):
        compiled(firsts, words, [blob], bytearray(1), 6)
    words = array.array("Q", [5, 9, 0, 0, 40])  # more LSNs than offsets
    with pytest.raises(FormatError):
        compiled(firsts, words, [blob], bytearray(1), 7)
    with pytest.raises(ValueError, match="differ"):
        compiled(firsts, words, [], bytearray(1), 5)
