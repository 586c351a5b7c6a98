"""``Wal.append_many``: several batches in one write and one barrier, each its own batch,
each checked on its own; and the observer hooks it is used with."""

from __future__ import annotations

import errno
import logging

import pytest

import segwal
from segwal import ConfigError, InvalidPayloadError, RecordTooLargeError, StorageError
from segwal.testing import MemoryFileSystem


def test_each_request_is_its_own_batch_and_a_bad_one_fails_alone(wal_dir: str) -> None:
    with segwal.open(wal_dir, max_record_bytes=100) as wal:
        before = wal.stats()
        results = wal.append_many(
            [
                ([b"a", b"b"], 1),
                (["not bytes"], 0),  # type: ignore[list-item]
                ([b"x" * 101], 0),
                ([b"c"], 70_000),
                ([], 3),
                ([bytearray(b"d"), memoryview(b"e")], 2),
            ]
        )
        after = wal.stats()
        assert results[0] == range(1, 3)
        assert isinstance(results[1], InvalidPayloadError)
        assert isinstance(results[2], RecordTooLargeError)
        assert isinstance(results[3], ConfigError)
        assert results[4] == range(3, 3)
        assert results[5] == range(3, 5)
        records = list(wal.replay())
        assert [(r.lsn, r.type, r.payload) for r in records] == [
            (1, 1, b"a"),
            (2, 1, b"b"),
            (3, 2, b"d"),
            (4, 2, b"e"),
        ]
        assert after.writes - before.writes == 1  # one write for every batch
        assert after.fsyncs - before.fsyncs == 1  # and one barrier
        assert wal.durable_lsn == 4
        assert after.appends - before.appends == 2  # an empty batch does not count (append_batch)


def test_batches_that_fill_a_segment_rotate_between_writes(wal_dir: str) -> None:
    with segwal.open(wal_dir, segment_bytes=2048) as wal:
        requests = [([bytes([i]) * 100] * 3, i) for i in range(40)]
        results = wal.append_many(requests)
        assert all(isinstance(r, range) for r in results)
        assert wal.stats().rotations.get("size", 0) > 5
        records = list(wal.replay())
        assert len(records) == 120
        assert [r.type for r in records] == [i for i in range(40) for _ in range(3)]
    assert segwal.verify(wal_dir).ok


def test_a_crash_keeps_each_batch_whole_and_every_acknowledged_one() -> None:
    fs = MemoryFileSystem()
    wal = segwal.open("/log", filesystem=fs, segment_bytes=2048)
    for round_ in range(6):
        requests = [
            ([f"{round_}:{n}:{i}:".encode() * 5 for i in range(n + 1)], n) for n in range(4)
        ]
        results = wal.append_many(requests)
        fs.mark_ack(max(r.stop - 1 for r in results if isinstance(r, range)))
    wal.close()
    states = 0
    for k, state in fs.replays():
        acked = max((int(a) for a in fs.notes(before=k)), default=0)  # type: ignore[call-overload]
        for image in state.crash_states(random_subsets=2, exhaustive_limit=3):
            states += 1
            with segwal.open("/log", filesystem=image) as again:
                records = list(again.replay())
            assert len(records) >= acked
            batches: dict[tuple[bytes, int], int] = {}
            for r in records:
                key = (r.payload.split(b":")[0], r.type)
                batches[key] = batches.get(key, 0) + 1
            for (round_, record_type), count in batches.items():
                assert count == record_type + 1, (k, round_, record_type, count)  # whole
    assert states > 50


def test_a_failed_write_raises_for_the_whole_call() -> None:
    fs = MemoryFileSystem()
    wal = segwal.open("/log", filesystem=fs)
    wal.append(b"kept")
    fs.fail("write", error=errno.EIO)
    with pytest.raises(StorageError):
        wal.append_many([([b"a"], 0), ([b"b"], 0)])
    with pytest.raises(segwal.WalFailedError):
        wal.append_many([([b"c"], 0)])
    wal.close()


def test_durable_and_synced_events(wal_dir: str) -> None:
    with segwal.open(wal_dir, sync="never") as wal:
        durable: list[int] = []
        fsyncs: list[float] = []

        def on_event(event: segwal.events.Event) -> None:
            if isinstance(event, segwal.events.Durable):
                durable.append(event.lsn)
            elif isinstance(event, segwal.events.Synced):
                fsyncs.append(event.seconds)

        remove = wal.observe(on_event)
        wal.append_many([([b"a", b"b"], 0)])
        assert durable == []  # sync="never": nothing is durable yet
        wal.sync()
        assert durable == [2]
        assert len(fsyncs) == 1 and fsyncs[0] >= 0
        wal.append(b"c")
        wal.rotate()  # a seal advances the durable LSN too
        assert durable == [2, 3]
        remove()
        wal.append(b"d")
        wal.sync()
        assert durable == [2, 3]
        stats = wal.stats()
        assert stats.fsync_buckets[-1] == (float("inf"), 2)
        assert stats.fsync_seconds >= 0


def test_an_observer_that_raises_is_logged_and_ignored(
    wal_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_event: object) -> None:
        raise RuntimeError("observer bug")

    with segwal.open(wal_dir) as wal:
        wal.observe(broken)
        with caplog.at_level(logging.ERROR, logger="segwal"):
            assert wal.append(b"a") == 1
        assert wal.append(b"b") == 2
    assert any("observer" in r.getMessage() for r in caplog.records)
