"""Buffered single appends (``buffer_bytes``): LSNs at once, one write per burst.

What must hold: LSNs stay contiguous and in order across bursts, batches, types and
rotations; nothing is written until the buffer fills or something needs the file (a sync,
a read of unsynced records, a rotation, a truncation, close); whatever a crash leaves is a
prefix that holds every record made durable; a failed write fails the log closed.
"""

from __future__ import annotations

import errno
import threading
from pathlib import Path

import pytest

import segwal
from segwal import ConfigError, NotFoundError, StorageError, WalFailedError
from segwal.testing import MemoryFileSystem


def _open(path: Path | str, **options: object) -> segwal.Wal:
    options.setdefault("sync", "never")
    options.setdefault("buffer_bytes", 1000)
    return segwal.open(path, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sync": "always", "buffer_bytes": 4096}, 'needs sync="interval" or "never"'),
        ({"buffer_bytes": -1}, "between 0 and"),
        ({"buffer_bytes": 2**31}, "between 0 and"),
        ({"buffer_bytes": 1.5}, "must be an integer"),
    ],
)
def test_bad_buffer_options_are_refused(
    tmp_path: Path, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        segwal.open(tmp_path / "log", **options)  # type: ignore[arg-type]
    assert info.value.option == "buffer_bytes"


def test_appends_wait_in_memory_until_the_buffer_fills(tmp_path: Path) -> None:
    with _open(tmp_path / "log", buffer_bytes=1000) as wal:
        lsns = [wal.append(b"x" * 100) for _ in range(9)]
        assert lsns == list(range(1, 10))
        assert wal.last_lsn == 9 and wal.next_lsn == 10
        assert wal.stats().writes == 0  # 900 bytes: still buffered
        assert wal.stats().records == 9 and wal.stats().payload_bytes == 900
        assert wal.append(b"x" * 100) == 10  # 1,000 bytes: one write for the burst
        assert wal.stats().writes == 1
        assert wal.append(b"y") == 11
        assert wal.stats().writes == 1
    with segwal.open(tmp_path / "log") as wal:
        assert [r.payload for r in wal.replay()] == [b"x" * 100] * 10 + [b"y"]
        # one burst is one batch: its records share the stamp of its first append
        stamps = {r.timestamp_us for r in wal.replay(1, 10)}
        assert len(stamps) == 1


def test_buffered_records_are_seen_by_unsynced_reads_and_made_durable_by_sync(
    tmp_path: Path,
) -> None:
    with _open(tmp_path / "log") as wal:
        lsn = wal.append(b"hello", type=7)
        with pytest.raises(NotFoundError):
            wal.read(lsn)  # durable records only: none yet
        record = wal.read(lsn, unsynced=True)  # writes the burst first
        assert (record.payload, record.type) == (b"hello", 7)
        assert wal.durable_lsn == 0
        wal.append(b"world")
        assert wal.sync() == 2 == wal.durable_lsn
        assert [r.payload for r in wal.replay()] == [b"hello", b"world"]


def test_types_batches_and_rotations_keep_lsn_order(tmp_path: Path) -> None:
    with _open(tmp_path / "log", segment_bytes=4096, buffer_bytes=700) as wal:
        expected: list[tuple[int, bytes]] = []
        for i in range(300):
            kind = i % 3
            if kind == 2 and i % 7 == 0:
                payloads = [f"batch {i}.{j}".encode() for j in range(5)]
                got = wal.append_batch(payloads, type=2)
                assert got.start == len(expected) + 1
                expected += [(2, p) for p in payloads]
            else:
                payload = f"record {i}".encode() * (1 + i % 5)
                assert wal.append(payload, type=i % 2) == len(expected) + 1
                expected.append((i % 2, payload))
            if i % 50 == 49:
                wal.rotate()
        assert len(wal.segments()) > 3
        got_records = [(r.type, r.payload) for r in wal.replay(unsynced=True)]
        assert got_records == expected
        assert [s.last_lsn for s in wal.segments()][-1] == len(expected) == wal.last_lsn


def test_truncate_after_sees_buffered_records(tmp_path: Path) -> None:
    with _open(tmp_path / "log") as wal:
        for i in range(10):
            wal.append(bytes([i]))
        wal.sync()
        for i in range(10, 20):
            wal.append(bytes([i]))
        wal.truncate_after(15)
        assert wal.last_lsn == 15
        assert wal.append(b"next") == 16
    with segwal.open(tmp_path / "log") as wal:
        assert [r.payload for r in wal.replay()] == [bytes([i]) for i in range(15)] + [b"next"]


def test_interval_flusher_writes_and_syncs_the_buffer(tmp_path: Path) -> None:
    with _open(tmp_path / "log", sync="interval", sync_interval=0.01, buffer_bytes=1 << 20) as wal:
        lsn = wal.append(b"soon durable")
        assert wal.wait_durable(lsn, timeout=10)
        assert wal.durable_lsn >= lsn


def test_concurrent_appenders_get_distinct_contiguous_lsns(tmp_path: Path) -> None:
    with _open(tmp_path / "log", buffer_bytes=512, segment_bytes=8192) as wal:
        got: list[list[int]] = [[] for _ in range(8)]

        def work(n: int) -> None:
            for i in range(200):
                got[n].append(wal.append(f"{n}:{i}".encode()))

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        every = sorted(lsn for lsns in got for lsn in lsns)
        assert every == list(range(1, 1601))
        for lsns in got:
            assert lsns == sorted(lsns)
        by_lsn = {r.lsn: r.payload for r in wal.replay(unsynced=True)}
        for n, lsns in enumerate(got):
            assert [by_lsn[lsn] for lsn in lsns] == [f"{n}:{i}".encode() for i in range(200)]


def test_a_crash_leaves_a_prefix_holding_every_durable_record() -> None:
    """Power loss at every operation index, every crash state: a prefix, all durable ones."""
    fs = MemoryFileSystem()
    wal = segwal.open("/log", filesystem=fs, sync="never", buffer_bytes=300, segment_bytes=2048)
    for i in range(60):
        wal.append(f"record {i:03d}".encode() * 3)
        if i % 13 == 12:
            fs.mark_ack(wal.sync())
    wal.close()
    fs.mark_ack(60)
    states = 0
    for k, state in fs.replays():
        acked = max((int(a) for a in fs.notes(before=k)), default=0)  # type: ignore[call-overload]
        for image in state.crash_states(random_subsets=4, exhaustive_limit=4):
            states += 1
            with segwal.open("/log", filesystem=image) as again:
                payloads = [r.payload for r in again.replay()]
            assert payloads == [f"record {i:03d}".encode() * 3 for i in range(len(payloads))]
            assert len(payloads) >= acked, (k, acked, len(payloads))
    assert states > 100


def test_a_failed_burst_write_fails_the_log_closed() -> None:
    fs = MemoryFileSystem()
    wal = segwal.open("/log", filesystem=fs, sync="never", buffer_bytes=100)
    wal.append(b"a" * 50)
    assert wal.sync() == 1
    fs.fail("write", error=errno.ENOSPC)
    wal.append(b"b" * 50)
    with pytest.raises(StorageError):
        wal.append(b"c" * 50)  # fills the buffer: the burst's write fails
    with pytest.raises(WalFailedError):
        wal.append(b"d")
    with pytest.raises(WalFailedError):
        wal.sync()
    wal.close()
    fs.clear_faults()
    with segwal.open("/log", filesystem=fs) as again:
        assert [r.payload for r in again.replay()] == [b"a" * 50]


def test_close_writes_the_buffer_and_reports_a_failed_write() -> None:
    fs = MemoryFileSystem()
    wal = segwal.open("/log", filesystem=fs, sync="never", buffer_bytes=1 << 16)
    wal.append(b"kept")
    wal.sync()
    wal.append(b"lost")
    fs.fail("write", error=errno.EIO)
    with pytest.raises(StorageError):
        wal.close()
    assert wal.closed
    fs.clear_faults()
    with segwal.open("/log", filesystem=fs) as again:  # the lock was released
        assert [r.payload for r in again.replay()] == [b"kept"]
