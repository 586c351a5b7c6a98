"""The public contract of ``segwal.open`` and ``Wal``, on real files.

LSNs, payload and type checks, size limits, reads and replay, rotation (size, age, forced,
limit), segment infos, timestamps, the durable LSN in each sync mode, closing, readonly
opening and option validation.
"""

from __future__ import annotations

import os
import time
from array import array
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

import segwal
from conftest import FakeClock, forget_clean_close, payload
from segwal import Record, SegmentInfo, Wal
from segwal.format.layout import FRAME_HEAD_SIZE, FRAME_TARGET_BYTES, HEADER_SIZE, SEAL_SIZE


def fill(wal: Wal, count: int, size: int | None = None) -> list[int]:
    """Append ``count`` records whose payloads are ``payload(lsn)``; return their LSNs."""
    lsns = []
    for _ in range(count):
        lsn = wal.next_lsn
        assert wal.append(payload(lsn, size)) == lsn
        lsns.append(lsn)
    return lsns


def check_log(wal: Wal, last: int, size: int | None = None) -> None:
    """The log holds exactly ``payload(1..last)``."""
    records = list(wal.replay(unsynced=True))
    assert [r.lsn for r in records] == list(range(1, last + 1))
    for r in records:
        assert r.payload == payload(r.lsn, size)


def frame_bytes(size: int, count: int = 1) -> int:
    """Bytes one records frame of ``count`` records and ``size`` payload bytes takes."""
    return FRAME_HEAD_SIZE + 4 * count + size


def unchanged(wal: Wal) -> Callable[[], None]:
    """Snapshot what an append that fails before writing must leave alone."""
    before = (wal.next_lsn, wal.stats(), [(s.path, s.size_bytes) for s in wal.segments()])
    sizes = {s.path: os.path.getsize(s.path) for s in wal.segments()}

    def check() -> None:
        assert (wal.next_lsn, wal.stats(), [(s.path, s.size_bytes) for s in wal.segments()]) == (
            before
        )
        assert {s.path: os.path.getsize(s.path) for s in wal.segments()} == sizes

    return check


# -- LSNs -------------------------------------------------------------------------------------


def test_empty_log(wal_dir: str) -> None:
    with segwal.open(wal_dir) as wal:
        assert (wal.first_lsn, wal.last_lsn, wal.next_lsn, wal.durable_lsn) == (1, 0, 1, 0)
        assert list(wal.replay()) == []
        assert wal.recovery.created
        with pytest.raises(segwal.NotFoundError):
            wal.read(1)
        assert len(wal.segments()) == 1


def test_lsns_start_at_one_and_are_contiguous_across_rotation_and_reopen(wal_dir: str) -> None:
    with segwal.open(wal_dir, segment_bytes=1024) as wal:
        assert fill(wal, 20, 100) == list(range(1, 21))
        assert wal.stats().rotations.get("size", 0) > 0
    with segwal.open(wal_dir, segment_bytes=1024) as wal:
        assert not wal.recovery.created
        assert (wal.first_lsn, wal.last_lsn, wal.next_lsn) == (1, 20, 21)
        assert wal.append(payload(21, 100)) == 21
        wal.rotate()
    with segwal.open(wal_dir, segment_bytes=4096) as wal:
        assert wal.append_batch([payload(22, 100), payload(23, 100)]) == range(22, 24)
        check_log(wal, 23, 100)
    with segwal.open(wal_dir) as wal:
        check_log(wal, 23, 100)
        assert wal.recovery.last_lsn == 23


def test_append_returns_int_and_batch_returns_range(wal_dir: str) -> None:
    with segwal.open(wal_dir) as wal:
        lsn = wal.append(b"one")
        assert type(lsn) is int
        assert lsn == 1
        batch = wal.append_batch([b"two", b"three", b"four"])
        assert isinstance(batch, range)
        assert batch == range(2, 5)
        assert wal.append_batch(iter([b"five"])) == range(5, 6)  # any iterable
        assert [r.payload for r in wal.replay()] == [b"one", b"two", b"three", b"four", b"five"]


def test_empty_batch_is_an_empty_range_and_writes_nothing(wal_dir: str) -> None:
    with segwal.open(wal_dir) as wal:
        wal.append(b"x")
        check = unchanged(wal)
        empty = wal.append_batch([])
        assert empty == range(2, 2)
        assert len(empty) == 0
        check()
        assert wal.append(b"y") == 2


def test_stats_count_appends_records_and_bytes(wal_dir: str) -> None:
    with segwal.open(wal_dir) as wal:
        wal.append(b"abc")
        wal.append_batch([b"de", b"", b"fghi"])
        stats = wal.stats()
        assert (stats.appends, stats.records, stats.payload_bytes) == (2, 4, 9)
        assert stats.writes == 2  # one write per batch
        assert stats.written_bytes == frame_bytes(3) + frame_bytes(6, 3)
        assert stats.fsyncs >= 2
        assert stats.rotations == {}


# -- payloads and types -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"bytes", b"bytes"),
        (bytearray(b"bytearray"), b"bytearray"),
        (memoryview(b"memoryview"), b"memoryview"),
        (memoryview(b"0123456789")[2:5], b"234"),
        (memoryview(b"abcdef")[::2], b"ace"),  # non-contiguous
        (memoryview(array("I", [1, 2])), array("I", [1, 2]).tobytes()),  # non-byte format
        (memoryview(array("d", [1.5])), array("d", [1.5]).tobytes()),
        (b"", b""),
    ],
    ids=["bytes", "bytearray", "memoryview", "slice", "strided", "uint32", "double", "empty"],
)
def test_bytes_like_payloads(wal_dir: str, data: Any, expected: bytes) -> None:
    with segwal.open(wal_dir) as wal:
        lsn = wal.append(data)
        batch = wal.append_batch([data, data])
        assert wal.read(lsn).payload == expected
        assert [r.payload for r in wal.replay(batch.start, batch.stop - 1)] == [expected] * 2
    with segwal.open(wal_dir) as wal:
        assert [r.payload for r in wal.replay()] == [expected] * 3


def test_bytearray_is_copied_at_append(wal_dir: str) -> None:
    with segwal.open(wal_dir, sync="never") as wal:
        buf = bytearray(b"before")
        lsn = wal.append(buf)
        buf[:] = b"after!"
        assert wal.read(lsn, unsynced=True).payload == b"before"


@pytest.mark.parametrize("bad", ["text", "", 7, 0, 1.5, None, True, [1, 2], object()], ids=repr)
def test_non_bytes_payloads_are_rejected(wal_dir: str, bad: Any) -> None:
    with segwal.open(wal_dir) as wal:
        wal.append(b"ok")
        check = unchanged(wal)
        with pytest.raises(segwal.InvalidPayloadError) as info:
            wal.append(bad)
        assert isinstance(info.value, TypeError)
        with pytest.raises(segwal.InvalidPayloadError) as info:
            wal.append_batch([b"fine", b"", bad])
        assert info.value.index == 2
        check()


def test_zero_byte_payloads(wal_dir: str) -> None:
    with segwal.open(wal_dir, segment_bytes=600) as wal:
        for _ in range(40):
            wal.append(b"")
        assert wal.append_batch([b""] * 50) == range(41, 91)
        assert wal.stats().payload_bytes == 0
    with segwal.open(wal_dir) as wal:
        records = list(wal.replay())
        assert [r.lsn for r in records] == list(range(1, 91))
        assert {r.payload for r in records} == {b""}
        assert wal.read(90).payload == b""


@pytest.mark.parametrize("record_type", [0, 1, 255, 256, 0x7FFF, 0xFFFF])
def test_record_type_round_trips(wal_dir: str, record_type: int) -> None:
    with segwal.open(wal_dir) as wal:
        lsn = wal.append(b"single", type=record_type)
        batch = wal.append_batch([b"a", b"b"], type=record_type)
        other = wal.append(b"default")
    with segwal.open(wal_dir) as wal:
        assert wal.read(lsn).type == record_type
        assert [r.type for r in wal.replay(batch.start, batch.stop - 1)] == [record_type] * 2
        assert wal.read(other).type == 0


@pytest.mark.parametrize("bad", [-1, 0x10000, 2**64, 1.0, "1", None, True, False], ids=repr)
def test_bad_record_type_is_a_config_error(wal_dir: str, bad: Any) -> None:
    with segwal.open(wal_dir) as wal:
        wal.append(b"ok")
        check = unchanged(wal)
        with pytest.raises(segwal.ConfigError) as info:
            wal.append(b"x", type=bad)
        assert isinstance(info.value, ValueError)
        with pytest.raises(segwal.ConfigError):
            wal.append_batch([b"x"], type=bad)
        check()


# -- size limits ------------------------------------------------------------------------------


def test_record_too_large_is_refused_before_writing(wal_dir: str) -> None:
    with segwal.open(wal_dir, max_record_bytes=1000) as wal:
        wal.append(b"x" * 1000)  # exactly the limit is fine
        check = unchanged(wal)
        with pytest.raises(segwal.RecordTooLargeError) as info:
            wal.append(b"x" * 1001)
        err = info.value
        assert isinstance(err, ValueError)
        assert (err.size, err.limit, err.index) == (1001, 1000, None)
        with pytest.raises(segwal.RecordTooLargeError) as info:
            wal.append_batch([b"", b"y" * 10, b"z" * 5000, b"w" * 2000])
        err = info.value
        assert (err.size, err.limit, err.index) == (5000, 1000, 2)
        check()
        assert wal.append(b"next") == 2
        assert [len(r.payload) for r in wal.replay()] == [1000, 4]


def test_raising_max_record_bytes_on_reopen_rotates_for_the_limit(wal_dir: str) -> None:
    with segwal.open(wal_dir, max_record_bytes=100) as wal:
        wal.append(b"small")
    with segwal.open(wal_dir, max_record_bytes=1000) as wal:
        lsn = wal.append(b"L" * 500)
        assert lsn == 2
        assert wal.stats().rotations == {"limit": 1}
        infos = wal.segments()
        assert [(s.first_lsn, s.last_lsn, s.sealed) for s in infos] == [(1, 1, True), (2, 2, False)]
        assert wal.read(2).payload == b"L" * 500
        wal.append(b"M" * 900)  # the new segment carries the new limit
        assert wal.stats().rotations == {"limit": 1}
    with segwal.open(wal_dir, max_record_bytes=1000) as wal:
        assert [r.payload for r in wal.replay()] == [b"small", b"L" * 500, b"M" * 900]


def test_raising_max_record_bytes_replaces_an_empty_active_segment(wal_dir: str) -> None:
    with segwal.open(wal_dir, max_record_bytes=100):
        pass
    with segwal.open(wal_dir, max_record_bytes=1000) as wal:
        assert wal.append(b"L" * 500) == 1
        assert wal.stats().rotations == {"limit": 1}
        infos = wal.segments()
        assert [(s.first_lsn, s.last_lsn, s.sealed) for s in infos] == [(1, 1, False)]
    # (META holds the clean close's mark since issue 13, and the active segment's index
    # sidecar is saved beside it since issue 15; the point is no other segment.)
    names = set(os.listdir(wal_dir)) - {"META", "00000000000000000001.wal.idx"}
    assert sorted(names) == ["00000000000000000001.wal", "LOCK"]
    with segwal.open(wal_dir, max_record_bytes=1000) as wal:
        assert [r.payload for r in wal.replay()] == [b"L" * 500]


def test_lowering_max_record_bytes_keeps_old_records_readable(wal_dir: str) -> None:
    with segwal.open(wal_dir, max_record_bytes=5000) as wal:
        wal.append(b"B" * 4000)
    with segwal.open(wal_dir, max_record_bytes=100) as wal:
        assert wal.read(1).payload == b"B" * 4000
        with pytest.raises(segwal.RecordTooLargeError):
            wal.append(b"B" * 101)


# -- reads and replay -------------------------------------------------------------------------


def test_read_returns_the_exact_record(wal_dir: str, clock: FakeClock) -> None:
    with segwal.open(wal_dir, clock=clock) as wal:
        t1 = clock.now_us
        wal.append(b"first", type=3)
        clock.advance(1.5)
        batch = wal.append_batch([b"b1", b"b2"], type=9)
        assert wal.read(1) == Record(lsn=1, type=3, timestamp_us=t1, payload=b"first")
        assert wal.read(3) == Record(3, 9, t1 + 1_500_000, b"b2")
        record = wal.read(batch.start)
        assert isinstance(record, Record)
        assert (record.lsn, record.type, record.timestamp_us, record.payload) == (
            2,
            9,
            t1 + 1_500_000,
            b"b1",
        )
        assert type(record.payload) is bytes


@pytest.mark.parametrize("lsn", [0, -1, 4, 5, 10**12])
def test_read_outside_the_log_is_not_found(wal_dir: str, lsn: int) -> None:
    with segwal.open(wal_dir) as wal:
        fill(wal, 3)
        with pytest.raises(segwal.NotFoundError) as info:
            wal.read(lsn)
        err = info.value
        assert isinstance(err, LookupError)
        assert (err.lsn, err.first_lsn, err.last_lsn) == (lsn, 1, 3)
        assert str(lsn) in str(err)


def test_replay_ranges_are_inclusive_and_clamped(wal_dir: str) -> None:
    with segwal.open(wal_dir, segment_bytes=1024) as wal:
        fill(wal, 30, 50)
        assert len(wal.segments()) > 3

        def lsns(*args: int | None) -> list[int]:
            return [r.lsn for r in wal.replay(*args)]

        assert lsns() == list(range(1, 31))
        assert lsns(5, 9) == [5, 6, 7, 8, 9]
        assert lsns(7, 7) == [7]
        assert lsns(8, 7) == []
        assert lsns(25) == list(range(25, 31))
        assert lsns(None, 4) == [1, 2, 3, 4]
        assert lsns(-10, 2) == [1, 2]
        assert lsns(0, 0) == []
        assert lsns(29, 10**9) == [29, 30]
        assert lsns(31) == []
        assert lsns(100, 200) == []
        assert lsns(None, -5) == []
        # every start and stop across segment boundaries
        for start in range(1, 31):
            for stop in range(start - 1, 32):
                assert lsns(start, stop) == list(range(start, min(stop, 30) + 1))
        assert [r.payload for r in wal.replay(11, 20)] == [payload(n, 50) for n in range(11, 21)]


def test_replay_across_many_segments(wal_dir: str) -> None:
    with segwal.open(wal_dir, segment_bytes=600) as wal:
        for lsn in range(1, 301):
            if lsn % 7 == 0:
                wal.append_batch([payload(lsn)])
            else:
                wal.append(payload(lsn))
        assert len(wal.segments()) > 40
    with segwal.open(wal_dir, readonly=True) as wal:
        check_log(wal, 300)
        assert [r.lsn for r in wal.replay(150, 160)] == list(range(150, 161))


def test_replay_is_lazy_and_restartable(wal_dir: str) -> None:
    with segwal.open(wal_dir, segment_bytes=800) as wal:
        fill(wal, 20, 40)
        it = wal.replay()
        first = next(it)
        assert first.lsn == 1
        assert [r.lsn for r in wal.replay(3, 4)] == [3, 4]
        assert [r.lsn for r in it] == list(range(2, 21))


# -- rotation ---------------------------------------------------------------------------------


def test_rotation_by_size_never_splits_a_record(wal_dir: str) -> None:
    segment_bytes = 1024
    with segwal.open(wal_dir, segment_bytes=segment_bytes) as wal:
        for lsn in range(1, 61):
            wal.append(payload(lsn, 50 + (lsn * 37) % 200))
        infos = wal.segments()
        assert wal.stats().rotations == {"size": len(infos) - 1}
        for info in infos:
            assert info.size_bytes <= segment_bytes
        for info in infos[:-1]:
            assert info.sealed
            assert info.record_count >= 1
            # rotation waited until the next record did not fit
            nxt = 50 + ((info.last_lsn + 1) * 37) % 200
            assert info.size_bytes - SEAL_SIZE + frame_bytes(nxt) + SEAL_SIZE > segment_bytes
        for info in infos:
            records = list(wal.replay(info.first_lsn, info.last_lsn))
            assert [r.lsn for r in records] == list(range(info.first_lsn, info.last_lsn + 1))
    with segwal.open(wal_dir) as wal:
        for r in wal.replay():
            assert r.payload == payload(r.lsn, 50 + (r.lsn * 37) % 200)


def test_an_oversized_record_gets_a_segment_of_its_own(wal_dir: str) -> None:
    with segwal.open(wal_dir, segment_bytes=1024) as wal:
        wal.append(b"a" * 10)
        big = wal.append(b"B" * 3000)
        after = wal.append(b"c" * 10)
        infos = wal.segments()
        assert [(s.first_lsn, s.last_lsn, s.sealed) for s in infos] == [
            (1, 1, True),
            (2, 2, True),
            (3, 3, False),
        ]
        assert infos[1].size_bytes == HEADER_SIZE + frame_bytes(3000) + SEAL_SIZE
        assert wal.read(big).payload == b"B" * 3000
        assert wal.read(after).payload == b"c" * 10
        assert wal.stats().rotations == {"size": 2}


def test_an_oversized_record_in_an_empty_segment_stays_there(wal_dir: str) -> None:
    with segwal.open(wal_dir, segment_bytes=1024) as wal:
        wal.append(b"B" * 3000)
        assert wal.stats().rotations == {}
        wal.append(b"next")
        assert [(s.first_lsn, s.last_lsn) for s in wal.segments()] == [(1, 1), (2, 2)]


def test_a_batch_is_never_split_across_segments(wal_dir: str) -> None:
    with segwal.open(wal_dir, segment_bytes=1024) as wal:
        wal.append(b"x" * 400)
        batch = wal.append_batch([payload(n, 300) for n in range(2, 8)])  # ~2 KiB in all
        wal.append(b"y")
        infos = wal.segments()
        assert [(s.first_lsn, s.last_lsn) for s in infos] == [(1, 1), (2, 7), (8, 8)]
        assert [r.payload for r in wal.replay(batch.start, batch.stop - 1)] == [
            payload(n, 300) for n in range(2, 8)
        ]


def test_rotation_by_age(wal_dir: str, clock: FakeClock) -> None:
    with segwal.open(wal_dir, max_segment_age=10, clock=clock) as wal:
        wal.append(b"a")
        clock.advance(5)
        wal.append(b"b")
        assert wal.stats().rotations == {}
        clock.advance(5.5)  # 10.5 s after the segment's first record
        wal.append(b"c")
        assert wal.stats().rotations == {"age": 1}
        infos = wal.segments()
        assert [(s.first_lsn, s.last_lsn, s.sealed) for s in infos] == [(1, 2, True), (3, 3, False)]
        clock.advance(100)  # age counts from a segment's first record, not from idle time
        wal.append(b"d")
        assert wal.stats().rotations == {"age": 2}
        assert [(s.first_lsn, s.last_lsn) for s in wal.segments()] == [(1, 2), (3, 3), (4, 4)]


def test_rotation_by_age_with_no_age_limit(wal_dir: str, clock: FakeClock) -> None:
    with segwal.open(wal_dir, clock=clock) as wal:
        wal.append(b"a")
        clock.advance(10**6)
        wal.append(b"b")
        assert wal.stats().rotations == {}
        assert len(wal.segments()) == 1


def test_interval_flusher_rotates_an_old_segment_without_appends(
    wal_dir: str, clock: FakeClock
) -> None:
    with segwal.open(
        wal_dir, sync="interval", sync_interval=0.01, max_segment_age=1, clock=clock
    ) as wal:
        wal.append(b"a")
        clock.advance(2)
        deadline = time.monotonic() + 5
        while wal.stats().rotations != {"age": 1} and time.monotonic() < deadline:
            time.sleep(0.01)
        assert wal.stats().rotations == {"age": 1}
        assert [(s.first_lsn, s.last_lsn, s.sealed) for s in wal.segments()] == [
            (1, 1, True),
            (2, 1, False),
        ]


def test_interval_flusher_does_not_count_a_young_oversized_segment_as_aged(wal_dir: str) -> None:
    with segwal.open(
        wal_dir, sync="interval", sync_interval=0.01, segment_bytes=1024, max_segment_age=3600
    ) as wal:
        wal.append(b"B" * 2000)
        time.sleep(0.2)  # twenty flusher rounds
        assert wal.stats().rotations.get("age", 0) == 0


def test_forced_rotate(wal_dir: str) -> None:
    with segwal.open(wal_dir) as wal:
        assert wal.rotate() is None  # nothing to seal
        fill(wal, 3)
        info = wal.rotate()
        assert isinstance(info, SegmentInfo)
        assert (info.first_lsn, info.last_lsn, info.record_count, info.sealed) == (1, 3, 3, True)
        assert os.path.exists(info.path)
        assert info.size_bytes == os.path.getsize(info.path)
        assert len(info.digest) == 64
        assert wal.rotate() is None  # the new active segment is empty
        assert wal.durable_lsn == 3
        assert wal.segments()[0] == info
        active = wal.segments()[-1]
        assert (active.first_lsn, active.last_lsn, active.sealed) == (4, 3, False)
        assert wal.append(payload(4)) == 4
        assert wal.stats().rotations == {"forced": 1}
    with segwal.open(wal_dir) as wal:
        check_log(wal, 4)


def test_rotations_are_counted_by_reason(wal_dir: str, clock: FakeClock) -> None:
    with segwal.open(wal_dir, segment_bytes=1024, max_segment_age=60, clock=clock) as wal:
        wal.append(b"x" * 600)
        wal.append(b"x" * 600)  # size
        wal.rotate()  # forced
        wal.rotate()  # nothing: not counted
        wal.append(b"y")
        clock.advance(61)
        wal.append(b"z")  # age
        wal.rotate()  # forced
        assert wal.stats().rotations == {"size": 1, "forced": 2, "age": 1}
        assert wal.stats().segments_created == 5  # the first one, at open, counts too
    with segwal.open(wal_dir) as wal:
        assert wal.stats().rotations == {}  # counters start again at open


def test_segment_infos(wal_dir: str, clock: FakeClock) -> None:
    with segwal.open(wal_dir, segment_bytes=1024, clock=clock) as wal:
        created = clock.now_us
        for lsn in range(1, 26):
            clock.advance(1)
            wal.append(payload(lsn, 120))
        infos = wal.segments()
        assert len(infos) > 2
        assert [i.sealed for i in infos] == [True] * (len(infos) - 1) + [False]
        assert infos[0].first_lsn == 1
        assert infos[-1].last_lsn == 25
        for a, b in pairwise(infos):
            assert b.first_lsn == a.last_lsn + 1
            assert b.sequence == a.sequence + 1
            assert a.path < b.path  # names sort in LSN order
        for info in infos:
            assert os.path.isfile(info.path)
            assert os.path.dirname(info.path) == wal_dir
            assert isinstance(info.created_at, datetime)
            assert info.created_at.tzinfo is not None
        assert infos[0].created_at == datetime.fromtimestamp(created / 1e6, tz=UTC)
        for info in infos[:-1]:
            assert info.size_bytes == os.path.getsize(info.path)
            assert info.min_timestamp_us <= info.max_timestamp_us
            first, last = wal.read(info.first_lsn), wal.read(info.last_lsn)
            assert (info.min_timestamp_us, info.max_timestamp_us) == (
                first.timestamp_us,
                last.timestamp_us,
            )
        assert infos[-1].size_bytes == os.path.getsize(infos[-1].path)
    with segwal.open(wal_dir, readonly=True) as wal:
        reopened = wal.segments()
        assert [(i.path, i.first_lsn, i.last_lsn, i.sealed) for i in reopened] == [
            (i.path, i.first_lsn, i.last_lsn, i.sealed) for i in infos
        ]
        for info in reopened:
            assert info.size_bytes == os.path.getsize(info.path)


# -- timestamps -------------------------------------------------------------------------------


def test_timestamps_never_decrease_when_the_clock_steps_back(
    wal_dir: str, clock: FakeClock
) -> None:
    with segwal.open(wal_dir, segment_bytes=1024, clock=clock) as wal:
        wal.append(b"a")
        clock.advance(-3600)
        wal.append(b"b")
        clock.advance(1)
        wal.append_batch([b"c", b"d"])
        clock.advance(7200)
        wal.append(b"e")
        clock.advance(-10_000)
        fill(wal, 10, 200)  # rotates too
        stamps = [r.timestamp_us for r in wal.replay()]
    assert stamps == sorted(stamps)
    assert stamps[0] == stamps[1] == stamps[2] == stamps[3]
    # ... and across a reopen, where the clock is still behind
    with segwal.open(wal_dir, clock=clock) as wal:
        wal.append(b"later")
        stamps = [r.timestamp_us for r in wal.replay()]
    assert stamps == sorted(stamps)


# -- the durable LSN --------------------------------------------------------------------------


def test_sync_always_makes_each_append_durable(wal_dir: str) -> None:
    with segwal.open(wal_dir, sync="always") as wal:
        for lsn in range(1, 6):
            wal.append(payload(lsn))
            assert wal.durable_lsn == wal.last_lsn == lsn
            assert wal.read(lsn).payload == payload(lsn)
        wal.append_batch([b"x", b"y"])
        assert wal.durable_lsn == 7
        assert wal.sync() == 7


def test_sync_never_is_durable_only_at_sync_rotate_and_close(wal_dir: str) -> None:
    with segwal.open(wal_dir, sync="never") as wal:
        fill(wal, 3)
        assert (wal.last_lsn, wal.durable_lsn) == (3, 0)
        assert list(wal.replay()) == []
        assert [r.lsn for r in wal.replay(unsynced=True)] == [1, 2, 3]
        with pytest.raises(segwal.NotFoundError) as info:
            wal.read(2)
        assert (info.value.lsn, info.value.first_lsn, info.value.last_lsn) == (2, 1, 3)
        assert "durable" in str(info.value)
        assert wal.read(2, unsynced=True).payload == payload(2)
        time.sleep(0.05)
        assert wal.durable_lsn == 0  # no background flushing in this mode

        assert wal.sync() == 3
        assert wal.durable_lsn == 3
        assert [r.lsn for r in wal.replay()] == [1, 2, 3]

        fill(wal, 2)
        assert wal.durable_lsn == 3
        assert [r.lsn for r in wal.replay(2)] == [2, 3]
        wal.rotate()
        assert wal.durable_lsn == 5

        fill(wal, 1)
        assert wal.durable_lsn == 5
        assert wal.wait_durable(6) is True  # runs the barrier itself
        assert wal.durable_lsn == 6

        fill(wal, 1)
    with segwal.open(wal_dir, sync="never") as wal:
        assert wal.durable_lsn == wal.last_lsn == 7  # close made it durable
        check_log(wal, 7)


def test_sync_never_rotation_by_size_makes_the_sealed_records_durable(wal_dir: str) -> None:
    with segwal.open(wal_dir, sync="never", segment_bytes=1024) as wal:
        fill(wal, 3, 200)  # 128 + 3 * 244 bytes
        assert wal.durable_lsn == 0
        fill(wal, 1, 200)  # does not fit with the seal: seals 1..3
        assert wal.stats().rotations == {"size": 1}
        assert wal.durable_lsn == 3
        assert wal.last_lsn == 4


def test_sync_interval_becomes_durable_soon(wal_dir: str) -> None:
    interval = 0.02
    with segwal.open(wal_dir, sync="interval", sync_interval=interval) as wal:
        lsn = wal.append(b"a")
        start = time.monotonic()
        while wal.durable_lsn < lsn and time.monotonic() - start < 5:
            time.sleep(interval / 4)
        elapsed = time.monotonic() - start
        assert wal.durable_lsn >= lsn
        assert elapsed < 1.0, f"took {elapsed:.3f}s with sync_interval={interval}"
        batch = wal.append_batch([b"b", b"c"])
        assert wal.wait_durable(batch.stop - 1, timeout=2) is True
        assert wal.read(3).payload == b"c"
        assert wal.wait_durable(1, timeout=0) is True  # already durable


def test_sync_interval_wait_durable_times_out(wal_dir: str) -> None:
    with segwal.open(wal_dir, sync="interval", sync_interval=30) as wal:
        lsn = wal.append(b"a")
        start = time.monotonic()
        assert wal.wait_durable(lsn, timeout=0.05) is False
        assert time.monotonic() - start < 2
        assert wal.durable_lsn == 0
        with pytest.raises(segwal.NotFoundError):
            wal.read(lsn)
        assert wal.sync() == 1
        assert wal.wait_durable(lsn, timeout=0) is True
    with segwal.open(wal_dir) as wal:
        assert wal.read(1).payload == b"a"


def test_close_stops_the_interval_flusher_promptly(wal_dir: str) -> None:
    wal = segwal.open(wal_dir, sync="interval", sync_interval=0.5)
    wal.append(b"a")
    start = time.monotonic()
    wal.close()
    assert time.monotonic() - start < 2
    with segwal.open(wal_dir) as wal:
        assert wal.read(1).payload == b"a"


@pytest.mark.parametrize("sync", ["always", "interval", "never"])
def test_wait_durable_beyond_the_log_is_not_found(wal_dir: str, sync: Any) -> None:
    with segwal.open(wal_dir, sync=sync) as wal:
        wal.append(b"a")
        with pytest.raises(segwal.NotFoundError):
            wal.wait_durable(2, timeout=0.01)


# -- closing ----------------------------------------------------------------------------------


CALLS: dict[str, Callable[[Wal], object]] = {
    "append": lambda w: w.append(b"x"),
    "append_batch": lambda w: w.append_batch([b"x"]),
    "append_batch_empty": lambda w: w.append_batch([]),
    "read": lambda w: w.read(1),
    "read_unsynced": lambda w: w.read(1, unsynced=True),
    "replay": lambda w: w.replay(),
    "replay_range": lambda w: w.replay(1, 1),
    "rotate": lambda w: w.rotate(),
    "sync": lambda w: w.sync(),
    "wait_durable": lambda w: w.wait_durable(1),
    "segments": lambda w: w.segments(),
    "refresh": lambda w: w.refresh(),
}


@pytest.mark.parametrize("readonly", [False, True], ids=["writer", "readonly"])
@pytest.mark.parametrize("call", sorted(CALLS))
def test_every_method_raises_closed_error_after_close(
    wal_dir: str, call: str, readonly: bool
) -> None:
    with segwal.open(wal_dir) as wal:
        wal.append(b"x")
    wal = segwal.open(wal_dir, readonly=readonly)
    wal.close()
    assert wal.closed
    with pytest.raises(segwal.ClosedError):
        CALLS[call](wal)


def test_close_twice_and_context_manager(wal_dir: str) -> None:
    with segwal.open(wal_dir) as wal:
        assert not wal.closed
        wal.append(b"x")
    assert wal.closed
    wal.close()
    wal.close()
    assert "closed" in repr(wal)
    # the lock was released: a new writer can open at once
    with segwal.open(wal_dir) as again:
        assert again.read(1).payload == b"x"


def test_context_manager_closes_on_error(wal_dir: str) -> None:
    with pytest.raises(RuntimeError), segwal.open(wal_dir, sync="never") as wal:
        wal.append(b"x")
        raise RuntimeError("boom")
    assert wal.closed
    with segwal.open(wal_dir) as again:
        assert again.read(1).payload == b"x"  # close still synced it


def test_second_writer_in_the_same_process_is_refused(wal_dir: str) -> None:
    with segwal.open(wal_dir):
        with pytest.raises(segwal.LockError) as info:
            segwal.open(wal_dir)
        assert info.value.pid == os.getpid()
    with segwal.open(wal_dir):
        pass


# -- readonly ---------------------------------------------------------------------------------


def test_readonly_sees_records_and_refuses_mutations(wal_dir: str) -> None:
    with segwal.open(wal_dir, segment_bytes=1024) as wal:
        fill(wal, 20, 100)
    names = sorted(os.listdir(wal_dir))
    sizes = {n: os.path.getsize(os.path.join(wal_dir, n)) for n in names if n != "LOCK"}
    with segwal.open(wal_dir, readonly=True) as ro:
        assert ro.readonly
        assert (ro.first_lsn, ro.last_lsn, ro.durable_lsn) == (1, 20, 20)
        check_log(ro, 20, 100)
        assert ro.read(7).payload == payload(7, 100)
        assert [r.lsn for r in ro.replay(5, 6)] == [5, 6]
        assert len(ro.segments()) > 1
        for call in ("append", "append_batch", "append_batch_empty", "rotate", "sync"):
            with pytest.raises(segwal.ReadOnlyError):
                CALLS[call](ro)
        ro.refresh()
        assert ro.wait_durable(20) is True
    assert sorted(os.listdir(wal_dir)) == names
    assert {n: os.path.getsize(os.path.join(wal_dir, n)) for n in names if n != "LOCK"} == sizes


def test_readonly_open_of_a_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(segwal.StorageError) as info:
        segwal.open(missing, readonly=True)
    assert isinstance(info.value, OSError)
    assert not missing.exists()


def test_readonly_alongside_a_writer_in_the_same_process(wal_dir: str) -> None:
    with segwal.open(wal_dir, sync="never") as wal:
        fill(wal, 3)
        wal.sync()
        fill(wal, 2)
        with segwal.open(wal_dir, readonly=True) as ro:
            assert ro.durable_lsn == 3
            assert [r.lsn for r in ro.replay()] == [1, 2, 3]
            with pytest.raises(segwal.NotFoundError):
                ro.read(4)
            wal.sync()
            ro.refresh()
            assert [r.lsn for r in ro.replay()] == [1, 2, 3, 4, 5]


def test_open_accepts_a_path_object(tmp_path: Path) -> None:
    with segwal.open(tmp_path / "a" / "b") as wal:
        wal.append(b"x")
        assert wal.path == str(tmp_path / "a" / "b")


# -- options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("segment_bytes", 0),
        ("segment_bytes", 100),
        ("segment_bytes", HEADER_SIZE + SEAL_SIZE),
        ("segment_bytes", 1024.0),
        ("segment_bytes", "1024"),
        ("max_record_bytes", 0),
        ("max_record_bytes", -5),
        ("max_record_bytes", 2**40),
        ("sync_interval", -0.1),
        ("sync_interval", 0),
        ("sync_interval", "fast"),
        ("max_segment_age", 0),
        ("max_segment_age", -1),
        ("sync", "sometimes"),
        ("sync", "ALWAYS"),
        ("sync", None),
        ("recovery", "yolo"),
        ("recovery", None),
        ("readonly", "yes"),
    ],
)
def test_bad_options_are_config_errors(tmp_path: Path, option: str, value: Any) -> None:
    path = tmp_path / "wal"
    with pytest.raises(segwal.ConfigError) as info:
        segwal.open(path, **{option: value})
    assert isinstance(info.value, ValueError)
    assert info.value.option == option
    assert not path.exists()  # nothing touched the disk


def test_smallest_segment_size_works(wal_dir: str) -> None:
    from segwal.log.config import MIN_SEGMENT_BYTES

    with pytest.raises(segwal.ConfigError):
        segwal.open(wal_dir, segment_bytes=MIN_SEGMENT_BYTES - 1)
    with segwal.open(wal_dir, segment_bytes=MIN_SEGMENT_BYTES) as wal:
        fill(wal, 30, 60)
        for info in wal.segments():
            assert info.size_bytes <= MIN_SEGMENT_BYTES
        check_log(wal, 30, 60)


# -- large batches ----------------------------------------------------------------------------


def test_a_batch_over_one_mebibyte_replays_intact(wal_dir: str) -> None:
    sizes = [FRAME_TARGET_BYTES // 2, 3, FRAME_TARGET_BYTES // 2, FRAME_TARGET_BYTES + 17, 0, 5000]
    items = [payload(i + 100, n) for i, n in enumerate(sizes)]
    with segwal.open(wal_dir) as wal:
        wal.append(b"before")
        batch = wal.append_batch(items, type=4)
        assert batch == range(2, 2 + len(items))
        assert wal.stats().writes == 2  # one write for the whole batch
        wal.append(b"after")
    with segwal.open(wal_dir) as wal:
        records = list(wal.replay())
        assert [r.payload for r in records] == [b"before", *items, b"after"]
        assert [r.type for r in records[1:-1]] == [4] * len(items)
        assert len({r.timestamp_us for r in records[1:-1]}) == 1
        assert wal.read(5).payload == items[3]


def test_a_batch_over_one_mebibyte_is_atomic(tmp_path: Path) -> None:
    """Cut the segment after any whole frame but the last: the whole batch goes."""
    k = 600 * 1024  # two of these do not fit in one frame
    src = tmp_path / "src"
    with segwal.open(src) as wal:
        wal.append(b"before")
        wal.append_batch([bytes([i + 1]) * k for i in range(3)])
        segment = Path(wal.segments()[-1].path)
    forget_clean_close(src)  # the cuts below stand for torn writes of a killed writer
    start = HEADER_SIZE + frame_bytes(len(b"before"))
    ends = [start + frame_bytes(k) * n for n in (1, 2, 3)]
    assert ends[-1] == segment.stat().st_size  # three frames, the last one with COMMIT
    for cut in [ends[0], ends[1], ends[0] + 100, ends[2] - 1, start + 1]:
        dst = tmp_path / f"cut{cut}"
        dst.mkdir()
        for f in src.iterdir():
            (dst / f.name).write_bytes(f.read_bytes())
        os.truncate(dst / segment.name, cut)
        with segwal.open(dst) as wal:
            assert [r.payload for r in wal.replay()] == [b"before"]
            assert wal.recovery.torn_tail
            assert [c.lsn for c in wal.recovery.cuts] == [2]
            assert wal.append(b"again") == 2
        with segwal.open(dst) as wal:
            assert [r.payload for r in wal.replay()] == [b"before", b"again"]
        assert segwal.verify(dst).ok
