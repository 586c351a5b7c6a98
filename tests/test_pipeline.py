"""Compression off the appending thread (``compression_threads``, log/pipeline.py).

What must hold: an ``append_batch`` returns its LSNs once queued, and the file gets the
batches strictly in LSN order, each whole; the queue is bounded and a full one blocks the
appender; everything that needs every appended record in the file (sync, flush, rotate,
truncation, close, unsynced reads) drains it first; a failed write in a worker fails the log
for the next call; a forked child cannot use it; after a crash at any point the log is a
prefix of what was appended, at batch ends, holding every record ``sync()`` acknowledged;
and the same calls give the same records as the synchronous path.
"""

from __future__ import annotations

import errno
import os
import random
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import segwal
from segwal import ConfigError, ForkedError, StorageError, WalFailedError
from segwal.log.pipeline import JOBS_PER_THREAD
from segwal.testing import MemoryFileSystem

pytest.importorskip("backports.zstd" if sys.version_info < (3, 14) else "compression.zstd")


def _open(path: Path | str, **options: object) -> segwal.Wal:
    options.setdefault("sync", "never")
    options.setdefault("compression", "zstd")
    options.setdefault("compression_threads", 2)
    return segwal.open(path, **options)  # type: ignore[arg-type]


def record(lsn: int, size: int = 300) -> bytes:
    """A compressible payload that names its LSN (JSON-like, so frames are compressed)."""
    head = f'{{"lsn": {lsn}, "text": "'.encode()
    body = (b"alpha bravo charlie delta " * (size // 26 + 1))[: max(0, size - len(head) - 2)]
    return head + body + b'"}'


def batch(first: int, n: int, size: int = 2000) -> list[bytes]:
    """Ten of these make a batch above INLINE_BYTES: queued, not compressed inline."""
    return [record(first + i, size) for i in range(n)]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"compression_threads": 2, "compression": None}, "needs a compression"),
        ({"compression_threads": 2, "sync": "always"}, 'needs sync="interval" or "never"'),
        ({"compression_threads": -1}, "between 0 and 64"),
        ({"compression_threads": 65}, "between 0 and 64"),
        ({"compression_threads": True}, "must be an integer"),
    ],
)
def test_bad_pipeline_options_are_refused(
    tmp_path: Path, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        _open(tmp_path / "log", **options)
    assert info.value.option == "compression_threads"
    assert not (tmp_path / "log").exists() or not list((tmp_path / "log").glob("*.wal"))


def test_batches_reach_the_file_in_lsn_order_compressed(tmp_path: Path) -> None:
    with _open(tmp_path / "log", compression_threads=2, segment_bytes=8192) as wal:
        expected: list[bytes] = []
        for i in range(200):
            n = 1 + i % 40
            got = wal.append_batch(batch(len(expected) + 1, n), type=i % 3)
            assert got == range(len(expected) + 1, len(expected) + n + 1)
            assert wal.last_lsn == got[-1] and wal.next_lsn == got[-1] + 1
            expected += batch(len(expected) + 1, n)
        assert wal.sync() == len(expected) == wal.durable_lsn
        assert len(wal.segments()) > 3  # rotations happened while batches were queued
    with segwal.open(tmp_path / "log") as again:
        records = list(again.replay())
        assert [r.payload for r in records] == expected
        assert [r.lsn for r in records] == list(range(1, len(expected) + 1))
    disk = sum(p.stat().st_size for p in (tmp_path / "log").glob("*.wal"))
    assert disk * 3 < sum(map(len, expected))  # the frames were compressed


def test_single_buffered_and_batched_appends_interleave_in_order(tmp_path: Path) -> None:
    with _open(tmp_path / "log", buffer_bytes=2000, segment_bytes=1 << 15) as wal:
        expected: list[tuple[int, bytes]] = []
        rng = random.Random(7)
        for _ in range(400):
            roll = rng.random()
            lsn = len(expected) + 1
            if roll < 0.6:
                kind = rng.randrange(2)
                p = record(lsn, rng.randint(10, 400))
                assert wal.append(p, type=kind) == lsn
                expected.append((kind, p))
            elif roll < 0.95:
                ps = batch(lsn, rng.randint(1, 20), rng.randint(10, 500))
                assert wal.append_batch(ps, type=5).start == lsn
                expected += [(5, p) for p in ps]
            else:
                wal.rotate()
        got = [(r.type, r.payload) for r in wal.replay(unsynced=True)]
        assert got == expected
    with segwal.open(tmp_path / "log") as again:
        assert [(r.type, r.payload) for r in again.replay()] == expected


def test_mutable_payloads_are_copied_when_queued(tmp_path: Path) -> None:
    with _open(tmp_path / "log") as wal:
        buf = bytearray(record(1, 20_000))
        wal.append_batch([buf, memoryview(record(2))])  # queued: above INLINE_BYTES
        buf[:] = b"x" * len(buf)  # after the call returned: the log keeps what it got
        wal.sync()
        assert [r.payload for r in wal.replay()] == [record(1, 20_000), record(2)]


def test_a_full_queue_blocks_the_appender(tmp_path: Path) -> None:
    """zstd level 19 takes ~100 ms for a 256 KiB batch, submitting one takes microseconds:
    the first batches are queued at once up to the bound, and no call returns with more
    queued than that (the appender waits, compressing a batch itself meanwhile)."""
    threads = 1
    limit = JOBS_PER_THREAD * threads
    big = [(record(i, 1024) * 2)[:1024] for i in range(256)]
    with _open(tmp_path / "log", compression_threads=threads, compression_level=19) as wal:
        queued = []
        for _ in range(limit + 3):
            wal.append_batch(big)
            queued.append(wal._state.buffer.queued)
        assert queued[:limit] == list(range(1, limit + 1))
        assert max(queued) == limit
        assert wal.sync() == 256 * (limit + 3)
        assert wal._state.buffer.queued == 0
        assert [r.payload for r in wal.replay()] == big * (limit + 3)


@pytest.mark.parametrize("action", ["rotate", "truncate_after", "truncate_before", "sync"])
def test_changes_that_need_the_file_drain_the_queue_first(tmp_path: Path, action: str) -> None:
    with _open(tmp_path / "log") as wal:
        wal.append_batch(batch(1, 10))
        wal.sync()
        state = wal._state
        with state.lock:  # re-entrant: nothing queued from here can be written before...
            wal.append_batch(batch(11, 10))
            wal.append_batch(batch(21, 10))
            assert state.buffer.queued == 2
            if action == "rotate":
                wal.rotate()  # ...this, which writes them first
                assert wal.segments()[0].last_lsn == 30
            elif action == "truncate_after":
                wal.truncate_after(25)
                assert wal.last_lsn == 25
            elif action == "truncate_before":
                wal.truncate_before(15)
                assert wal.first_lsn <= 15
            else:
                assert wal.sync() == 30 == wal.durable_lsn
            assert state.buffer.queued == 0
        want = 25 if action == "truncate_after" else 30
        assert wal.last_lsn == want
        assert wal.append_batch(batch(want + 1, 1)).start == want + 1
        first = wal.first_lsn
    with segwal.open(tmp_path / "log") as again:
        assert [r.payload for r in again.replay()] == batch(first, want + 1 - first + 1)


def test_close_and_unsynced_reads_drain_the_queue(tmp_path: Path) -> None:
    wal = _open(tmp_path / "log")
    state = wal._state
    with state.lock:
        wal.append_batch(batch(1, 10))
        wal.append_batch(batch(11, 10))
        assert state.buffer.queued == 2
        assert wal.read(18, unsynced=True).payload == record(18, 2000)
        assert state.buffer.queued == 0
        wal.append_batch(batch(21, 10))
        assert state.buffer.queued == 1
    wal.close()
    assert not any(t.name.startswith("segwal-compress") for t in threading.enumerate())
    with segwal.open(tmp_path / "log") as again:
        assert [r.payload for r in again.replay()] == batch(1, 30)


def test_wait_durable_drains_what_it_waits_for(tmp_path: Path) -> None:
    with _open(tmp_path / "log") as wal:
        state = wal._state
        with state.lock:
            lsns = wal.append_batch(batch(1, 10))
            assert state.buffer.queued == 1
        assert wal.wait_durable(lsns[-1], timeout=10)
        assert wal.durable_lsn >= lsns[-1]


def test_interval_flusher_queues_bursts_and_syncs_them(tmp_path: Path) -> None:
    with _open(tmp_path / "log", sync="interval", sync_interval=0.01, buffer_bytes=1 << 20) as w:
        lsn = w.append(record(1))
        deadline = time.monotonic() + 10
        while w.durable_lsn < lsn and time.monotonic() < deadline:
            time.sleep(0.01)
        assert w.durable_lsn >= lsn


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_a_failed_write_in_a_worker_fails_the_log_for_the_next_call(code: int) -> None:
    fs = MemoryFileSystem()
    wal = _open("/log", filesystem=fs)
    wal.append_batch(batch(1, 10))
    assert wal.sync() == 10
    fs.fail("write", error=code)
    wal.append_batch(batch(11, 10))  # queued: returns; a worker's write fails
    deadline = time.monotonic() + 10
    while wal._state.failure is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(WalFailedError) as info:
        wal.append_batch(batch(21, 10))
    assert isinstance(info.value.cause, StorageError)
    with pytest.raises(WalFailedError):
        wal.sync()
    with pytest.raises(WalFailedError):
        wal.append(b"x")
    wal.close()
    fs.clear_faults()
    with segwal.open("/log", filesystem=fs) as again:
        assert [r.payload for r in again.replay()] == batch(1, 10)


def test_a_failed_write_during_a_drain_is_raised_by_that_call() -> None:
    fs = MemoryFileSystem()
    wal = _open("/log", filesystem=fs)
    with wal._state.lock:
        wal.append_batch(batch(1, 10))
        fs.fail("write", error=errno.ENOSPC)
        with pytest.raises(StorageError):
            wal.sync()  # the drain writes the queued batch itself
    with pytest.raises(WalFailedError):
        wal.append_batch(batch(11, 10))
    wal.close()
    fs.clear_faults()
    with segwal.open("/log", filesystem=fs) as again:
        assert list(again.replay()) == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_cannot_use_the_pipeline(tmp_path: Path) -> None:
    with _open(tmp_path / "log") as wal:
        wal.append_batch(batch(1, 10))
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: every change refused, close returns, no thread joined
            code = 1
            try:
                try:
                    wal.append_batch(batch(11, 1))
                except ForkedError:
                    try:
                        wal.sync()
                    except ForkedError:
                        wal.close()
                        code = 0
            finally:
                os.write(write, bytes([code]))
                os._exit(code)
        os.close(write)
        status = os.read(read, 1)
        os.close(read)
        _, exit_status = os.waitpid(pid, 0)
        assert status == b"\x00" and os.WEXITSTATUS(exit_status) == 0
        wal.append_batch(batch(11, 10))  # the parent goes on
        assert wal.sync() == 20
    with segwal.open(tmp_path / "log") as again:
        assert [r.payload for r in again.replay()] == batch(1, 20)


def test_concurrent_appenders_get_contiguous_batches(tmp_path: Path) -> None:
    with _open(tmp_path / "log", compression_threads=2, segment_bytes=1 << 16) as wal:
        got: list[list[range]] = [[] for _ in range(4)]

        def work(n: int) -> None:
            for i in range(50):
                got[n].append(wal.append_batch([f"{n}:{i}:{j}".encode() * 400 for j in range(8)]))

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        every = sorted(lsn for ranges in got for r in ranges for lsn in r)
        assert every == list(range(1, 4 * 50 * 8 + 1))
        by_lsn = {r.lsn: r.payload for r in wal.replay(unsynced=True)}
        for n, ranges in enumerate(got):
            for i, r in enumerate(ranges):
                assert [by_lsn[lsn] for lsn in r] == [
                    f"{n}:{i}:{j}".encode() * 400 for j in range(8)
                ]


def test_a_crash_leaves_a_prefix_at_batch_ends_holding_every_synced_record() -> None:
    """Power loss at every operation index, several crash states each: a prefix of the
    appended records ending at a batch end, holding every record sync() acknowledged."""
    fs = MemoryFileSystem()
    wal = _open("/log", filesystem=fs, segment_bytes=8192, buffer_bytes=600)
    rng = random.Random(11)
    inside: set[int] = set()  # record counts that would cut an append_batch in two
    expected: list[bytes] = []
    for i in range(60):
        first = len(expected) + 1
        if rng.random() < 0.5:
            # Above INLINE_BYTES (queued) and below it (compressed inline) alike.
            ps = batch(first, rng.randint(1, 12), rng.randint(20, 3000))
            wal.append_batch(ps)
            inside.update(range(len(expected) + 1, len(expected) + len(ps)))
            expected += ps
        else:
            p = record(first, rng.randint(20, 200))
            wal.append(p)
            expected.append(p)
        if i % 9 == 8:
            fs.mark_ack(wal.sync())
    wal.close()
    fs.mark_ack(len(expected))
    states = 0
    for k, state in fs.replays():
        acked = max((int(a) for a in fs.notes(before=k)), default=0)  # type: ignore[call-overload]
        for image in state.crash_states(random_subsets=4, exhaustive_limit=4):
            states += 1
            with segwal.open("/log", filesystem=image) as again:
                payloads = [r.payload for r in again.replay()]
            assert payloads == expected[: len(payloads)]
            assert len(payloads) >= acked, (k, acked, len(payloads))
            assert len(payloads) not in inside, f"a batch cut in two at {len(payloads)}"
    assert states > 100


_BATCHES = st.lists(
    st.one_of(
        st.tuples(
            st.just("batch"),
            st.lists(st.binary(min_size=0, max_size=600), min_size=0, max_size=30),
            st.integers(0, 3),
        ),
        st.tuples(st.just("single"), st.binary(min_size=0, max_size=300), st.integers(0, 3)),
        st.tuples(st.sampled_from(["sync", "rotate", "read"]), st.none(), st.none()),
    ),
    max_size=25,
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=_BATCHES, buffered=st.booleans(), threads=st.integers(1, 3))
def test_same_records_as_the_synchronous_path(
    tmp_path_factory: pytest.TempPathFactory,
    steps: list[tuple[str, object, object]],
    buffered: bool,
    threads: int,
) -> None:
    base = tmp_path_factory.mktemp("same")
    results = []
    for n in (0, threads):
        path = base / f"t{n}"
        options: dict[str, object] = {"segment_bytes": 8192}
        if buffered:
            options["buffer_bytes"] = 700
        with _open(path, compression_threads=n, **options) as wal:
            returned: list[object] = []
            for name, arg, kind in steps:
                if name == "batch":
                    compressible = [p * 8 for p in arg]  # type: ignore[attr-defined]
                    returned.append(wal.append_batch(compressible, type=kind))  # type: ignore[arg-type]
                elif name == "single":
                    returned.append(wal.append(arg * 4, type=kind))  # type: ignore[operator,arg-type]
                elif name == "sync":
                    returned.append(wal.sync())
                elif name == "rotate":
                    wal.rotate()
                else:
                    returned.append([r.payload for r in wal.replay(unsynced=True)])
            returned.append(wal.last_lsn)
        with segwal.open(path) as again:
            replay = [(r.lsn, r.type, r.payload) for r in again.replay()]
        results.append((returned, replay))
    assert results[0] == results[1]


def test_encrypted_compressed_frames_are_sealed_in_order(tmp_path: Path) -> None:
    """With a key, the pipeline compresses and the write seals (under the lock): the log
    reads back only with the key, every batch whole and in order."""
    pytest.importorskip("cryptography")
    key = bytes(range(32))
    with _open(tmp_path / "log", encryption_key=key, segment_bytes=8192) as wal:
        for i in range(40):
            wal.append_batch(batch(i * 7 + 1, 7, 3000))
        assert wal.sync() == 280
    with segwal.open(tmp_path / "log", encryption_key=key) as again:
        assert [r.payload for r in again.replay()] == batch(1, 280, 3000)
    with pytest.raises(segwal.MissingKeyError), segwal.open(tmp_path / "log") as bare:
        list(bare.replay())


def test_a_small_batch_with_nothing_queued_is_compressed_inline(tmp_path: Path) -> None:
    with _open(tmp_path / "log") as wal:
        state = wal._state
        with state.lock:
            wal.append_batch(batch(1, 2))  # below INLINE_BYTES: written before it returns
            assert state.buffer.queued == 0 and wal.segments()[-1].last_lsn == 2
            wal.append_batch(batch(3, 10))  # queued
            wal.append_batch(batch(13, 2))  # small, but behind a queued one: queued too
            assert state.buffer.queued == 2
        assert wal.sync() == 14
        assert [r.payload for r in wal.replay()] == batch(1, 14)
