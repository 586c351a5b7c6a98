"""Readers never mix records across a rewind (issue 13, #6; the rewind count of issue 10).

After ``truncate_after(15)`` and new appends, LSNs 16.. hold other bytes. A reader that had
already received some of the old 16.. must get ``ReaderFellBehindError``, never the new
records after the old ones; a reader that had not read past the rewind point goes on.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import segwal


def _log(path: Path, records: int = 20) -> segwal.Wal:
    wal = segwal.open(path, segment_bytes=4096)
    for i in range(1, records + 1):
        wal.append(b"old %d" % i)
    return wal


def test_a_follower_past_the_rewind_point_falls_behind(tmp_path: Path) -> None:
    with _log(tmp_path / "log") as wal:
        follower = wal.follow(1, timeout=5)
        got = [next(follower).lsn for _ in range(20)]
        assert got == list(range(1, 21))
        wal.truncate_after(15)
        for i in range(16, 26):
            wal.append(b"new %d" % i)
        with pytest.raises(segwal.ReaderFellBehindError) as info:
            next(follower)
        assert info.value.lsn == 16


def test_a_waiting_follower_wakes_and_falls_behind(tmp_path: Path) -> None:
    with _log(tmp_path / "log") as wal:
        follower = wal.follow(1, timeout=5)
        assert [next(follower).lsn for _ in range(20)] == list(range(1, 21))
        errors: list[BaseException] = []

        def consume() -> None:
            try:
                for _record in follower:
                    pass
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=consume)
        thread.start()
        wal.truncate_after(15)
        for i in range(16, 26):
            wal.append(b"new %d" % i)
        thread.join(10)
        assert not thread.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], segwal.ReaderFellBehindError)


def test_a_follower_behind_the_rewind_point_goes_on(tmp_path: Path) -> None:
    with _log(tmp_path / "log", 10) as wal:
        follower = wal.follow(1, timeout=0.2)
        assert [next(follower).lsn for _ in range(10)] == list(range(1, 11))
        for i in range(11, 21):
            wal.append(b"old %d" % i)
        wal.truncate_after(15)
        for i in range(16, 26):
            wal.append(b"new %d" % i)
        rest = list(follower)
        assert [r.lsn for r in rest] == list(range(11, 26))
        assert [r.payload for r in rest[5:]] == [b"new %d" % i for i in range(16, 26)]


def test_a_follower_exactly_at_the_rewind_point_goes_on(tmp_path: Path) -> None:
    with _log(tmp_path / "log", 15) as wal:
        follower = wal.follow(1, timeout=0.2)
        assert [next(follower).lsn for _ in range(15)] == list(range(1, 16))
        wal.append(b"old 16")
        wal.truncate_after(15)
        wal.append(b"new 16")
        assert [r.payload for r in follower] == [b"new 16"]


def test_two_rewinds_the_lowest_counts(tmp_path: Path) -> None:
    with _log(tmp_path / "log", 30) as wal:
        follower = wal.follow(1, timeout=5)
        assert [next(follower).lsn for _ in range(12)] == list(range(1, 13))
        wal.truncate_after(10)  # below what the follower read
        for i in range(11, 31):
            wal.append(b"mid %d" % i)
        wal.truncate_after(25)  # above it
        wal.append(b"last")
        with pytest.raises(segwal.ReaderFellBehindError) as info:
            next(follower)
        assert info.value.lsn == 11
