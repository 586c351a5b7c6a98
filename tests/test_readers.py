"""Readers against a model: ``read``, ``lsn_at``, ``read_batch`` pagination, ``replay`` in
bounded memory, and named consumer cursors (positions that persist and act as holds).

Every test compares what the log returns with a plain dict of what was appended, across
many segments, after a reopen and through a readonly open.
"""

from __future__ import annotations

import random
import subprocess
import sys
import tracemalloc
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import segwal
from conftest import FakeClock, payload
from segwal.storage.fileio import OsFileSystem

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_readers.py"


@dataclass
class Model:
    """What was appended: LSN -> (timestamp, payload), in LSN order."""

    records: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    last_stamp: int = 0

    def add(self, lsns: range, now_us: int, payloads: list[bytes]) -> None:
        # The log stamps a batch with the clock, or its last stamp when the clock fell back.
        self.last_stamp = max(self.last_stamp, now_us)
        for lsn, data in zip(lsns, payloads, strict=True):
            self.records[lsn] = (self.last_stamp, data)

    def lsn_at(self, timestamp_us: int, first: int, next_lsn: int) -> int:
        lsns = [lsn for lsn in sorted(self.records) if lsn >= first]
        stamps = [self.records[lsn][0] for lsn in lsns]
        i = bisect_left(stamps, timestamp_us)
        return lsns[i] if i < len(lsns) else next_lsn


def fill(
    wal: segwal.Wal,
    model: Model,
    clock: FakeClock,
    *,
    batches: int,
    seed: int = 1,
    max_size: int = 120,
) -> None:
    """Append a mix of single records and batches, moving the clock forward, not at all, or
    back now and then."""
    rng = random.Random(seed)
    for _ in range(batches):
        roll = rng.random()
        if roll < 0.1:
            clock.advance(-rng.choice([0.001, 0.5]))  # the log repeats its last stamp
        elif roll < 0.8:
            clock.advance(rng.choice([0.000_001, 0.001, 0.02]))
        first = wal.next_lsn
        count = 1 if rng.random() < 0.4 else rng.randint(2, 30)
        items = [payload(first + i, rng.randrange(max_size)) for i in range(count)]
        lsns = range(wal.append(items[0]), first + 1) if count == 1 else wal.append_batch(items)
        model.add(lsns, clock.now_us, items)


# -- read -----------------------------------------------------------------------------------


def check_point_reads(wal: segwal.Wal, model: Model, lsns: list[int]) -> None:
    for lsn in lsns:
        record = wal.read(lsn)
        assert record.lsn == lsn
        assert (record.timestamp_us, record.payload) == model.records[lsn], lsn


def test_read_matches_the_model_across_rotations_reopen_and_readonly(
    wal_dir: str, clock: FakeClock
) -> None:
    model = Model()
    with segwal.open(wal_dir, segment_bytes=4096, sync="never", clock=clock) as wal:
        fill(wal, model, clock, batches=400)
        wal.sync()
        assert len(wal.segments()) > 40
        rng = random.Random(2)
        lsns = sorted(model.records)
        sample = [*rng.sample(lsns, 300), lsns[0], lsns[-1]]
        for info in wal.segments():  # the first and last record of every segment
            sample += [info.first_lsn, info.last_lsn] if info.record_count else []
        check_point_reads(wal, model, sample)
    with segwal.open(wal_dir, segment_bytes=4096, sync="never", clock=clock) as wal:
        check_point_reads(wal, model, sample)
        assert [r.lsn for r in wal.replay()] == lsns
    with segwal.open(wal_dir, readonly=True) as ro:
        check_point_reads(ro, model, sample[:80])
        assert [(r.timestamp_us, r.payload) for r in ro.replay()] == [
            model.records[n] for n in lsns
        ]


def test_read_outside_the_log_says_why(wal_dir: str) -> None:
    with segwal.open(wal_dir, segment_bytes=1024, sync="never") as wal:
        with pytest.raises(segwal.NotFoundError, match="past the end"):
            wal.read(1)
        for i in range(100):
            wal.append(payload(i + 1, 40))
        wal.sync()
        wal.append(b"not durable yet")
        with pytest.raises(segwal.NotFoundError, match="not durable yet") as info:
            wal.read(101)
        assert (info.value.lsn, info.value.first_lsn, info.value.last_lsn) == (101, 1, 101)
        assert wal.read(101, unsynced=True).payload == b"not durable yet"
        with pytest.raises(segwal.NotFoundError, match="past the end"):
            wal.read(102, unsynced=True)
        wal.truncate_before(50)
        with pytest.raises(segwal.NotFoundError, match="starts at LSN 50"):
            wal.read(49)
        with pytest.raises(segwal.NotFoundError):
            wal.read(0)
        assert wal.read(50).payload == payload(50, 40)


# -- lsn_at ---------------------------------------------------------------------------------


def check_lsn_at(wal: segwal.Wal, model: Model, *, unsynced: bool = False) -> None:
    limit = wal.last_lsn if unsynced else wal.durable_lsn
    first = wal.first_lsn
    visible = Model({n: v for n, v in model.records.items() if first <= n <= limit})
    stamps = sorted({stamp for stamp, _ in visible.records.values()})
    probes = {stamps[0] - 10**6, stamps[-1] + 1, stamps[-1] + 10**6}
    for stamp in stamps:
        probes |= {stamp - 1, stamp, stamp + 1}
    for ts in sorted(probes):
        assert wal.lsn_at(ts, unsynced=unsynced) == visible.lsn_at(ts, first, limit + 1), ts


def test_lsn_at_exact_boundaries(wal_dir: str, clock: FakeClock) -> None:
    t0 = clock.now_us
    with segwal.open(wal_dir, segment_bytes=2048, sync="always", clock=clock) as wal:
        assert wal.lsn_at(t0) == 1  # an empty log: the next LSN
        for i in range(60):
            clock.now_us = t0 + 1000 * i
            assert wal.append(payload(i + 1, 30)) == i + 1
        for i in range(60):
            assert wal.lsn_at(t0 + 1000 * i) == i + 1
            assert wal.lsn_at(t0 + 1000 * i - 1) == i + 1
            assert wal.lsn_at(t0 + 1000 * i + 1) == i + 2
        assert wal.lsn_at(0) == 1  # before the first record: the first LSN
        assert wal.lsn_at(t0 + 10**9) == 61  # after the last: the next LSN
        assert len(wal.segments()) >= 3


def test_lsn_at_equal_stamps_in_a_batch_and_a_clock_that_steps_back(
    wal_dir: str, clock: FakeClock
) -> None:
    t0 = clock.now_us
    with segwal.open(wal_dir, sync="always", clock=clock) as wal:
        wal.append(b"a")  # 1 at t0
        clock.advance(0.01)
        wal.append_batch([b"b", b"c", b"d"])  # 2..4 at t0 + 10 ms
        clock.advance(-5)  # steps back: the next records repeat t0 + 10 ms
        wal.append_batch([b"e", b"f"])  # 5..6
        clock.advance(3)  # still behind the last stamp
        wal.append(b"g")  # 7
        clock.now_us = t0 + 20_000
        wal.append(b"h")  # 8 at t0 + 20 ms
        stamps = [r.timestamp_us for r in wal.replay()]
        assert stamps == [t0] + [t0 + 10_000] * 6 + [t0 + 20_000]
        assert wal.lsn_at(t0) == 1
        assert wal.lsn_at(t0 + 1) == 2
        assert wal.lsn_at(t0 + 10_000) == 2  # the first of equal stamps
        assert wal.lsn_at(t0 + 10_001) == 8
        assert wal.lsn_at(t0 + 20_001) == 9
    with segwal.open(wal_dir, sync="always", clock=clock) as wal:
        clock.now_us = t0  # behind every stamp of the log: repeats the newest one
        wal.append(b"i")
        assert wal.read(9).timestamp_us == t0 + 20_000
        assert wal.lsn_at(t0 + 20_000) == 8


def test_lsn_at_matches_the_model_across_segments_and_truncation(
    wal_dir: str, clock: FakeClock
) -> None:
    model = Model()
    with segwal.open(wal_dir, segment_bytes=2048, sync="never", clock=clock) as wal:
        fill(wal, model, clock, batches=150, seed=3)
        wal.sync()
        assert len(wal.segments()) > 12
        check_lsn_at(wal, model)
        # Past the durable LSN: unsynced readers see further than durable ones.
        fill(wal, model, clock, batches=5, seed=4)
        check_lsn_at(wal, model)
        check_lsn_at(wal, model, unsynced=True)
        wal.sync()
        # A checkpoint inside a segment: LSNs below it are never the answer.
        middle = wal.segments()[5]
        wal.truncate_before(middle.first_lsn + 2)
        check_lsn_at(wal, model)
        assert wal.lsn_at(0) == middle.first_lsn + 2
    with segwal.open(wal_dir, readonly=True) as ro:
        check_lsn_at(ro, model)


def test_lsn_at_raises_on_a_damaged_frame_instead_of_skipping_it(
    wal_dir: str, clock: FakeClock
) -> None:
    with segwal.open(wal_dir, segment_bytes=8192, sync="never", clock=clock) as wal:
        for _ in range(300):
            clock.advance(0.001)
            wal.append(b"x" * 50)
        victim = wal.segments()[1]
    with open(victim.path, "r+b") as f:  # flip a byte in the middle of a frame
        f.seek(victim.size_bytes // 2)
        byte = f.read(1)
        f.seek(victim.size_bytes // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    with segwal.open(wal_dir, readonly=True) as ro:
        with pytest.raises(segwal.CorruptionError):
            list(ro.replay(victim.first_lsn, victim.last_lsn))
        middle = (victim.min_timestamp_us + victim.max_timestamp_us) // 2
        with pytest.raises(segwal.CorruptionError):
            ro.lsn_at(middle)  # returns the next segment's first LSN today


class CountingFS(OsFileSystem):
    """The real file system, counting the bytes read from segment files."""

    def __init__(self) -> None:
        super().__init__()
        self.read_bytes = 0

    def open_read(self, path: str):  # type: ignore[no-untyped-def]
        handle = super().open_read(path)
        fs = self

        class Counting:
            def __getattr__(self, name: str) -> object:
                return getattr(handle, name)

            def pread(self, size: int, offset: int) -> bytes:
                data = handle.pread(size, offset)
                if path.endswith(".wal"):
                    fs.read_bytes += len(data)
                return data

        return Counting()


def test_readonly_point_read_does_not_rescan_the_active_segment(wal_dir: str) -> None:
    with segwal.open(wal_dir, sync="never") as wal:
        for _ in range(30):
            wal.append_batch([payload(wal.next_lsn + i, 200) for i in range(1000)])
        wal.sync()
        active = wal.segments()[-1].size_bytes
        assert active > 4 << 20
        fs = CountingFS()
        with segwal.open(wal_dir, readonly=True, filesystem=fs) as ro:
            fs.read_bytes = 0
            for lsn in (10, 5000, 19_000):
                assert ro.read(lsn).payload == payload(lsn, 200)
            # Three point reads should cost a few index intervals, not three segment scans.
            assert fs.read_bytes < active // 4, f"{fs.read_bytes:,} bytes read"


# -- read_batch -----------------------------------------------------------------------------


def walk(wal: segwal.Wal, start: int, *, max_records: int, max_bytes: int) -> list[segwal.Record]:
    seen: list[segwal.Record] = []
    lsn = start
    while True:
        page = wal.read_batch(lsn, max_records=max_records, max_bytes=max_bytes)
        assert len(page.records) <= max_records
        size = sum(len(r.payload) for r in page.records)
        assert size <= max_bytes or len(page.records) == 1
        if page.records:
            assert page.records[0].lsn == lsn
            assert page.next_lsn == page.records[-1].lsn + 1
        seen += page.records
        if not page.has_more:
            break
        assert page.records, "has_more with an empty page"
        lsn = page.next_lsn
    return seen


@pytest.mark.parametrize(
    ("max_records", "max_bytes"),
    [(1, 1 << 20), (7, 1 << 20), (1000, 1 << 20), (1000, 1), (50, 2000), (3, 64)],
)
def test_read_batch_walks_every_record_once_in_order(
    wal_dir: str, clock: FakeClock, max_records: int, max_bytes: int
) -> None:
    model = Model()
    with segwal.open(wal_dir, segment_bytes=4096, sync="never", clock=clock) as wal:
        fill(wal, model, clock, batches=60, seed=5, max_size=200)
        wal.sync()
        seen = walk(wal, wal.first_lsn, max_records=max_records, max_bytes=max_bytes)
        assert [r.lsn for r in seen] == sorted(model.records)
        assert all((r.timestamp_us, r.payload) == model.records[r.lsn] for r in seen)
        # Starting anywhere, including mid-batch and mid-segment.
        start = sorted(model.records)[len(model.records) // 3]
        seen = walk(wal, start, max_records=max_records, max_bytes=max_bytes)
        assert [r.lsn for r in seen] == [n for n in sorted(model.records) if n >= start]


def test_read_batch_edges(wal_dir: str) -> None:
    with segwal.open(wal_dir, segment_bytes=1 << 20, sync="never") as wal:
        empty = wal.read_batch(1)
        assert (empty.records, empty.next_lsn, empty.has_more) == ([], 1, False)
        wal.append_batch([payload(1, 10), b"B" * 5000, payload(3, 10)])
        wal.sync()
        # A record larger than max_bytes still comes back, alone.
        page = wal.read_batch(2, max_bytes=100)
        assert [r.lsn for r in page.records] == [2] and page.records[0].payload == b"B" * 5000
        assert (page.next_lsn, page.has_more) == (3, True)
        page = wal.read_batch(1, max_bytes=100)
        assert [r.lsn for r in page.records] == [1]  # the next one would not fit
        end = wal.read_batch(4)
        assert (end.records, end.next_lsn, end.has_more) == ([], 4, False)
        beyond = wal.read_batch(10)
        assert (beyond.records, beyond.has_more) == ([], False)
        # Undurable records are not in a page unless asked for.
        wal.append(b"later")
        assert wal.read_batch(4).records == []
        assert [r.payload for r in wal.read_batch(4, unsynced=True).records] == [b"later"]
        wal.sync()
        for i in range(300):
            wal.append(payload(i, 100))
        wal.rotate()
        wal.append(b"x")
        wal.sync()
        wal.truncate_before(100)
        with pytest.raises(segwal.NotFoundError, match="starts at LSN 100") as info:
            wal.read_batch(99)
        assert info.value.first_lsn == 100
        assert wal.read_batch(100, max_records=2).records[0].lsn == 100
        with pytest.raises(segwal.ConfigError):
            wal.read_batch(100, max_records=0)
        with pytest.raises(segwal.ConfigError):
            wal.read_batch(100, max_bytes=0)


# -- replay in bounded memory ---------------------------------------------------------------


def test_replay_memory_stays_bounded_on_a_log_much_larger_than_it(wal_dir: str) -> None:
    size, per_batch = 4096, 256
    batch = [bytes([i % 256]) * size for i in range(per_batch)]
    with segwal.open(wal_dir, segment_bytes=16 << 20, sync="never") as wal:
        for _ in range(50):  # 50 MiB of payloads in 4 segments
            wal.append_batch(batch)
        wal.sync()
        total = 50 * per_batch
        tracemalloc.start()
        try:
            count = nbytes = 0
            for record in wal.replay():
                count += 1
                nbytes += len(record.payload)
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert (count, nbytes) == (total, total * size)
    assert peak < 8 << 20, f"replay of a 50 MiB log peaked at {peak / 2**20:.1f} MiB"


# -- cursors --------------------------------------------------------------------------------


def test_cursor_create_commit_and_persist(wal_dir: str) -> None:
    with segwal.open(wal_dir, segment_bytes=2048, sync="always") as wal:
        for i in range(1, 101):
            wal.append(payload(i, 50))
        cursor = wal.cursor("indexer")
        assert (cursor.name, cursor.position) == ("indexer", 1)
        assert wal.cursors() == {"indexer": 1}
        page = cursor.read_batch(max_records=10)
        assert [r.lsn for r in page.records] == list(range(1, 11))
        cursor.commit(page.records[-1].lsn)
        assert cursor.position == 11
        assert [r.lsn for r in cursor.read_batch(max_records=3).records] == [11, 12, 13]
        assert [r.lsn for r in cursor.follow(timeout=0.05)] == list(range(11, 101))
        assert cursor.position == 11  # reading never moves it; only commit does
        other = wal.cursor("late", start=60)
        assert other.position == 60
        assert wal.cursor("indexer").position == 11  # an existing cursor keeps its place
        with pytest.raises(segwal.NotFoundError):
            other.commit(500)
        assert "indexer" in repr(cursor) and "11" in repr(cursor)
    with segwal.open(wal_dir, segment_bytes=2048, sync="always") as wal:
        assert wal.cursors() == {"indexer": 11, "late": 60}
        cursor = wal.cursor("indexer", start=90)  # start applies only when creating
        assert cursor.position == 11
        cursor.commit(100)
        assert cursor.read_batch().records == []
        assert list(cursor.follow(timeout=0.01)) == []
        wal.append(b"new")
        assert [r.payload for r in cursor.follow(timeout=0.01)] == [b"new"]


@pytest.mark.parametrize(
    "name", ["", " x", "../x", "a/b", ".hidden", "-x", "x" * 129, "tab\t", "é", None, 5, b"x"]
)
def test_invalid_cursor_names(wal_dir: str, name: object) -> None:
    with segwal.open(wal_dir) as wal, pytest.raises(segwal.ConfigError):
        wal.cursor(name)  # type: ignore[arg-type]
    assert not any(p.name.startswith("cursor.") for p in Path(wal_dir).iterdir())


def test_cursor_is_a_hold_for_retention_and_truncation(wal_dir: str) -> None:
    with segwal.open(wal_dir, segment_bytes=2048, sync="never", retention_max_bytes=8192) as wal:
        for i in range(1, 41):
            wal.append(payload(i, 100))
        cursor = wal.cursor("consumer", start=20)
        for i in range(41, 400):
            wal.append(payload(i, 100))
        wal.sync()
        # Retention ran at every rotation: the segment holding LSN 20 and all later ones stay.
        assert wal.first_lsn <= 20
        assert wal.segments()[0].first_lsn <= 20 <= wal.segments()[0].last_lsn
        assert wal.read(20).payload == payload(20, 100)
        kept = [d for d in wal.retention_plan() if d.kept_by and "cursor:consumer" in d.kept_by]
        assert kept
        with pytest.raises(segwal.HoldError, match="cursor:consumer") as info:
            wal.truncate_before(21)
        assert (info.value.name, info.value.hold_lsn) == ("cursor:consumer", 20)
        wal.truncate_before(20)  # at the cursor is fine
        # Committing moves the hold; retention then lets the older segments go.
        cursor.commit(299)
        wal.apply_retention()
        assert 20 < wal.first_lsn <= 300
        assert wal.segments()[0].first_lsn <= 300 <= wal.segments()[0].last_lsn
        # Deleting the cursor releases its hold altogether.
        assert cursor.delete() is True
        assert cursor.delete() is False
        assert wal.cursors() == {}
        wal.apply_retention()
        assert wal.first_lsn > 300
        wal.truncate_before(wal.last_lsn)


def test_readonly_open_creates_and_commits_a_cursor_the_writer_honours(wal_dir: str) -> None:
    with segwal.open(wal_dir, segment_bytes=2048, sync="always", retention_max_bytes=4096) as wal:
        wal.append_batch([payload(i, 100) for i in range(1, 31)])
        with segwal.open(wal_dir, readonly=True) as ro:
            cursor = ro.cursor("reader", start=5)
            assert cursor.position == 5
            cursor.commit(9)
            assert ro.cursors() == {"reader": 10}
            assert [r.lsn for r in cursor.read_batch(max_records=2).records] == [10, 11]
            with pytest.raises(segwal.ReadOnlyError):
                ro.hold("h", 10)
        assert wal.cursors() == {"reader": 10}
        for i in range(31, 300):
            wal.append(payload(i, 100))
        assert wal.first_lsn <= 10 <= wal.segments()[0].last_lsn
        with pytest.raises(segwal.HoldError, match="cursor:reader"):
            wal.truncate_before(11)
        with segwal.open(wal_dir, readonly=True) as ro:
            ro.cursor("reader").commit(249)
        wal.apply_retention()
        assert 10 < wal.first_lsn <= 250
        with segwal.open(wal_dir, readonly=True) as ro:
            assert ro.cursor("reader").delete()
        wal.apply_retention()
        assert wal.first_lsn > 250


# -- the benchmark's smoke test -------------------------------------------------------------


@pytest.mark.timeout(240)
def test_bench_readers_quick_mode_runs_and_prints_a_table(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in proc.stdout.splitlines()
        if line.startswith("|") and not line.startswith("|--")
    ]
    assert rows and rows[0][0] == "measure", proc.stdout
    names = {row[0] for row in rows[1:]}
    for expected in (
        "read(lsn) random",
        "replay 100 B",
        "replay 1 KiB",
        "follow in-process",
        "follow cross-process",
        "replay peak memory",
    ):
        assert any(name.startswith(expected) for name in names), (expected, names)
    assert not any(p.name.startswith("segwal-bench") for p in tmp_path.iterdir())  # cleaned up
