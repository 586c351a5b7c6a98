"""A readonly log plans its view again only when LOCK says the writer changed something.

Each read of a readonly log compares LOCK's bytes with those it read before its last plan
(format/lock.py: the writer rewrites them, differently, on every change a reader sees). The
tests count directory listings (each plan lists the directory once) on real files, with the
writer in this process.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

import segwal
from conftest import payload
from segwal.format import lock
from segwal.format.layout import crc32c
from segwal.storage.fileio import OsFileSystem


class CountingFS(OsFileSystem):
    """Counts directory listings: one per plan of the view."""

    listings = 0

    def list_dir(self, path: str):  # type: ignore[no-untyped-def]
        self.listings += 1
        return super().list_dir(path)


def lock_of(directory: str) -> lock.Published:
    found = lock.decode((Path(directory) / "LOCK").read_bytes())
    assert found is not None
    return found


def test_lock_generation_round_trips_and_older_files_have_none() -> None:
    raw = lock.encode(7, 100, 2, (1, 2, 3, 4, 5, 6), generation=9)
    assert len(raw) == lock.SIZE == 116
    assert lock.decode(raw) == lock.Published(7, 100, 2, (1, 2, 3, 4, 5, 6), 9)
    assert lock.decode(raw[:100]) == lock.Published(7, 100, 2, (1, 2, 3, 4, 5, 6), None)
    assert lock.decode(lock.encode(7, 100, 2))[4] is None  # generation 0: none published
    torn = bytearray(raw)
    torn[104] ^= 1  # a torn read of the generation: unknown, not another value
    assert lock.decode(bytes(torn)) == lock.Published(7, 100, 2, (1, 2, 3, 4, 5, 6), None)


def test_each_writer_continues_the_generation_and_changes_bump_it(wal_dir: str) -> None:
    with segwal.open(wal_dir) as wal:
        wal.append(b"a")
        first = lock_of(wal_dir).generation
        assert first is not None
        wal.hold("h", 1)  # META replaced, no LSN moved
        assert lock_of(wal_dir).generation == first + 1
        wal.truncate_before(1)
    assert lock_of(wal_dir).pid == 0
    closed = lock_of(wal_dir).generation
    with segwal.open(wal_dir):
        assert lock_of(wal_dir).generation == closed + 1  # type: ignore[operator]


def test_reads_plan_again_only_after_a_change(wal_dir: str) -> None:
    fs = CountingFS()
    with segwal.open(wal_dir, segment_bytes=4096, sync="always") as wal:
        for i in range(1, 101):
            wal.append(payload(i, 50))
        with segwal.open(wal_dir, readonly=True, filesystem=fs) as ro:
            fs.listings = 0
            for lsn in (1, 50, 100, 7):
                assert ro.read(lsn).payload == payload(lsn, 50)
            assert fs.listings <= 1  # the first read may plan once (LOCK moved since open)
            settled = fs.listings
            assert ro.read(3).lsn == 3
            assert list(ro.replay(98)) == [ro.read(98), ro.read(99), ro.read(100)]
            assert fs.listings == settled  # nothing changed: no plan

            wal.append(payload(101, 50))  # a new durable record
            assert ro.read(101).payload == payload(101, 50)
            assert fs.listings == settled + 1

            wal.hold("h", 60)  # a change that moves no LSN
            assert ro.read(101).lsn == 101
            assert fs.listings == settled + 2
            assert ro.holds() == {"h": 60}

            wal.release("h")
            wal.truncate_before(40)  # retention: records below 40 are gone
            with pytest.raises(segwal.NotFoundError):
                ro.read(10)
            assert ro.first_lsn == 40
            count = fs.listings

            wal.truncate_after(80)  # a rewind, then the same LSNs with other bytes
            for i in range(81, 102):
                wal.append(b"new %d" % i)
            assert ro.read(90).payload == b"new 90"
            assert ro.rewinds == 1
            assert fs.listings > count


def test_a_writer_session_that_only_rotates_and_retains_is_seen(wal_dir: str) -> None:
    """Two writer sessions that end with the same numbers in LOCK (no LSN moves, the same
    counters) still leave different bytes: the generation."""
    with segwal.open(wal_dir, segment_bytes=4096) as wal:
        for i in range(1, 301):
            wal.append(payload(i, 50))
    with segwal.open(wal_dir, readonly=True) as ro:
        assert ro.read(5).lsn == 5
        for checkpoint in (100, 200):
            with segwal.open(wal_dir) as wal:
                wal.truncate_before(checkpoint)
            with pytest.raises(segwal.NotFoundError):
                ro.read(checkpoint - 1)
            assert ro.read(checkpoint).lsn == checkpoint


def test_a_lock_without_generation_plans_every_read(wal_dir: str) -> None:
    with segwal.open(wal_dir) as wal:
        wal.append_batch([b"x"] * 10)
    path = Path(wal_dir) / "LOCK"
    path.write_bytes(path.read_bytes()[:100])  # what a writer before 0.3 left
    fs = CountingFS()
    with segwal.open(wal_dir, readonly=True, filesystem=fs) as ro:
        fs.listings = 0
        for lsn in range(1, 6):
            assert ro.read(lsn).payload == b"x"
        assert fs.listings == 5


def test_explicit_refresh_always_plans(wal_dir: str) -> None:
    with segwal.open(wal_dir) as wal:
        wal.append(b"x")
    fs = CountingFS()
    with segwal.open(wal_dir, readonly=True, filesystem=fs) as ro:
        fs.listings = 0
        ro.refresh()
        ro.refresh()
        assert fs.listings == 2
    assert (
        os.path.exists(path := os.path.join(wal_dir, "LOCK"))
        and os.path.getsize(path) == lock.MAPPED_SIZE
    )


@pytest.mark.parametrize(
    "args",
    [
        (1, 2, 3, (1, 2, 3, 4, 5, 6), 7),
        (0, 0, 0, lock.NO_COUNTERS, 0),
        (5, 2**64 - 1, 9, (2**64 + 5, 0, 0, 0, 0, 1), 2**64 - 1),  # a counter that wrapped
    ],
)
def test_lock_bytes_are_the_documented_fields(args: tuple) -> None:  # type: ignore[type-arg]
    """encode packs the fixed part in one go; the bytes are still field by field."""
    pid, durable, rewinds, counters, generation = args
    mask = (1 << 64) - 1
    body = struct.pack("<6Q", *(c & mask for c in counters))
    expected = (
        struct.pack(
            "<8sQQQQQ", b"SWLOCK01", pid, durable, ~durable & mask, rewinds, ~rewinds & mask
        )
        + body
        + struct.pack("<I", crc32c(body))
        + struct.pack("<QQ", generation & mask, ~generation & mask)
    )
    assert lock.encode(*args) == expected
