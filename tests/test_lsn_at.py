"""lsn_at bisects the sealed segments by time: the same answers as a walk over every record,
in a log of many segments, with empty segments, repeated timestamps and a clock that steps
back (append timestamps never decrease), from a writer and from a readonly open."""

from __future__ import annotations

import random

import segwal
from conftest import FakeClock
from segwal.log.catalog import Sealed


def expected(stamps: list[tuple[int, int]], timestamp_us: int, next_lsn: int) -> int:
    """The first LSN stamped at or after ``timestamp_us``, by walking every record."""
    for lsn, ts in stamps:
        if ts >= timestamp_us:
            return lsn
    return next_lsn


def test_lsn_at_agrees_with_a_walk_over_every_record(wal_dir: str) -> None:
    clock = FakeClock()
    rng = random.Random(15)
    stamps: list[tuple[int, int]] = []
    with segwal.open(wal_dir, segment_bytes=1024, clock=clock, sync="never") as wal:
        for _ in range(400):
            step = rng.choice([0, 0, 0.001, 0.5, -0.2])  # repeats, steps, one step back
            clock.advance(step)
            if rng.random() < 0.05:
                wal.rotate()  # sometimes on an empty active segment
                wal.rotate()
            lsns = wal.append_batch([b"r"] * rng.randint(1, 4))
            ts = wal.read(lsns[0], unsynced=True).timestamp_us
            stamps.extend((lsn, ts) for lsn in lsns)
        wal.sync()
        assert len(wal.segments()) > 30
        low, high = stamps[0][1] - 10, stamps[-1][1] + 10
        probes = sorted({ts for _, ts in stamps} | {low, high} | {ts + 1 for _, ts in stamps})
        with segwal.open(wal_dir, readonly=True) as ro:
            for probe in probes:
                want = expected(stamps, probe, wal.last_lsn + 1)
                assert wal.lsn_at(probe) == want, probe
                assert ro.lsn_at(probe) == want, probe


def test_ceilings_stay_sorted_past_an_empty_segment() -> None:
    sealed = Sealed((), (), (), (5, 9, 9, 12))
    assert [sealed.from_time(t) for t in (0, 5, 6, 9, 10, 12, 13)] == [0, 0, 1, 1, 3, 3, 4]
