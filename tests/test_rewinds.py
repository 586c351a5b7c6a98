"""Readers never mix records across a rewind (issue 13, #6; the rewind count of issue 10).

After ``truncate_after(15)`` and new appends, LSNs 16.. hold other bytes. A reader that had
already received some of the old 16.. must get ``ReaderFellBehindError``, never the new
records after the old ones; a reader that had not read past the rewind point goes on.
"""

from __future__ import annotations

import os
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


# -- the rewind count persists, is published, and cursors carry it --------------------------


def test_the_rewind_count_survives_reopen_and_is_published(tmp_path: Path) -> None:
    from segwal.format import lock
    from segwal.format.meta import decode

    path = tmp_path / "log"
    with _log(path) as wal:
        assert wal.rewinds == 0
        wal.truncate_after(15)
        wal.truncate_after(12)
        assert wal.rewinds == 2
        raw = (path / "LOCK").read_bytes()
        assert lock.decode(raw)[:3] == (os.getpid(), 12, 2)
    meta = decode((path / "META").read_bytes(), "META")
    assert (meta.rewinds, meta.rewound_to, meta.truncate_after) == (2, ((1, 15), (2, 12)), None)
    with segwal.open(path) as wal:
        assert wal.rewinds == 2
        wal.append(b"x")
    with segwal.open(path, readonly=True) as ro:
        assert ro.rewinds == 2
    assert lock.decode((path / "LOCK").read_bytes())[:3] == (0, 13, 2)


def test_a_cursor_committed_past_a_rewind_point_falls_behind(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with _log(path) as wal:
        cursor = wal.cursor("indexer", start=1)
        cursor.commit(20)  # processed 1..20
        wal.truncate_after(15)
        for i in range(16, 26):
            wal.append(b"new %d" % i)
        with pytest.raises(segwal.ReaderFellBehindError) as info:
            cursor.read_batch()
        assert info.value.lsn == 16
        with pytest.raises(segwal.ReaderFellBehindError):
            cursor.follow(timeout=0)
    # The same from a fresh open, and from a readonly open in "another process".
    for readonly in (False, True):
        with segwal.open(path, readonly=readonly) as wal:
            again = wal.cursor("indexer")
            assert again.position == 21
            with pytest.raises(segwal.ReaderFellBehindError, match=r"cursor\.commit\(15\)"):
                again.read_batch()
    with segwal.open(path) as wal:
        fixed = wal.cursor("indexer")
        fixed.commit(15)  # the way out the error names
        assert [r.payload for r in fixed.read_batch().records][:2] == [b"new 16", b"new 17"]
    with segwal.open(path) as wal:
        assert wal.cursor("indexer").read_batch().records[0].lsn == 16


def test_a_cursor_behind_the_rewind_point_reads_on(tmp_path: Path) -> None:
    with _log(tmp_path / "log") as wal:
        cursor = wal.cursor("c", start=1)
        cursor.commit(9)
        wal.truncate_after(15)
        wal.append(b"new 16")
        assert [r.lsn for r in cursor.read_batch().records] == list(range(10, 17))


def test_a_readonly_follower_in_another_process_falls_behind(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with _log(path) as wal:
        ro = segwal.open(path, readonly=True)
        follower = ro.follow(1, timeout=5)
        assert [next(follower).lsn for _ in range(20)] == list(range(1, 21))
        wal.truncate_after(15)
        for i in range(16, 26):
            wal.append(b"new %d" % i)
        with pytest.raises(segwal.ReaderFellBehindError) as info:
            next(follower)
        assert info.value.lsn == 16
        ro.close()


def test_old_cursor_and_lock_files_still_read(tmp_path: Path) -> None:
    from segwal.format import cursor, lock

    v1 = cursor.encode(7)
    assert v1[:8] == b"SWCUR001" and len(v1) == 20
    assert cursor.decode(v1, "c") == cursor.CursorFile(7, None)
    assert cursor.decode(cursor.encode(7, 3), "c") == cursor.CursorFile(7, 3)
    old_lock = lock.encode(42, 100, 0)[:32]  # what a writer before the extension wrote
    assert lock.decode(old_lock) == lock.Published(42, 100, None)
    torn = bytearray(lock.encode(42, 100, 5, (1, 2, 3, 4, 5, 6)))
    torn[40] ^= 1
    torn[60] ^= 1
    assert lock.decode(bytes(torn)) == lock.Published(42, 100, None, None)


def test_an_async_follower_falls_behind_across_a_rewind(tmp_path: Path) -> None:
    import asyncio

    import segwal.aio

    async def main() -> int | None:
        async with segwal.aio.open(tmp_path / "log", segment_bytes=4096) as wal:
            await wal.append_batch([b"old %d" % i for i in range(1, 21)])
            follower = wal.follow(1, timeout=5)
            got = [(await anext(follower)).lsn for _ in range(20)]
            assert got == list(range(1, 21))
            await wal.truncate_after(15)
            for i in range(16, 26):
                await wal.append(b"new %d" % i)
            try:
                await anext(follower)
            except segwal.ReaderFellBehindError as exc:
                return exc.lsn
            return None

    assert asyncio.run(main()) == 16


def test_a_rewind_count_far_past_the_history_is_answered_at_once(tmp_path: Path) -> None:
    from segwal.format.meta import Meta, encode

    path = tmp_path / "log"
    with _log(path) as wal:
        wal.truncate_after(18)
    # A META claiming 2**62 rewinds (valid, if absurd): no loop over the counts, and a reader
    # whose count is older than what META remembers is told it fell behind.
    (path / "META").write_bytes(encode(Meta(rewinds=1 << 62, rewound_to=((1 << 62, 10),))))
    with segwal.open(path, readonly=True) as ro:
        assert ro.rewinds == 1 << 62
        assert ro.rewound_below(0, 5) == 0
        assert ro.rewound_below(ro.rewinds - 1, 15) == 10
        assert ro.rewound_below(ro.rewinds - 1, 5) is None
        assert ro.rewound_below(ro.rewinds, 50) is None
