"""The workloads: what each row of the report times, and the timed loops themselves.

Every contender runs the same loop (a single-record append loop, a batch loop, N threads
appending, a replay that counts records, random point reads); only the calls inside the
loop differ, and those come from the contender's writer and reader (see ``peers``). Work
that is not being measured (creating directories, opening, building payload lists,
closing, deleting) stays outside the clock.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING, Any

import segwal
from segwal.bench.peers import Reader, SegwalReader

if TYPE_CHECKING:
    from segwal.bench.peers import Peer

KiB = 1024
_POOL_SIZE = 1024  # distinct payloads per record size; records cycle through them
SEGMENT_RECORDS = 50  # readsegs: records per batch (one frame each)

# Workload kinds, in report order, with the title of their table.
GROUPS: dict[str, str] = {
    "buffered": "Buffered append",
    "durable": "Durable append, one thread",
    "group": "Group commit: durable appends from N threads",
    "replay": "Full replay",
    "read": "Random read by key / LSN",
    "open": "Opening a log of 1,000 sealed segments",
}


@dataclass
class Sample:
    """One timed run of one contender on one workload."""

    records: int  # records (or opens, for the open workload) done inside the clock
    payload_bytes: int
    seconds: float
    syncs: int | None = None  # data barriers (fdatasync), where the contender counts them
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def mbps(self) -> float:
        return self.payload_bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Case:
    """One workload at one size: one row of a table."""

    name: str
    group: str  # a key of GROUPS
    # batch, single, durable, durable-prealloc, durable-direct, group, replay, replayframes,
    # read, readview, readsegs, open
    kind: str
    record_size: int = 0
    records: int = 0  # batch, single, replay: records; read: reads; open: opens per sample
    batch: int = 0  # batch: records per append_batch / transaction
    seconds: float = 0.0  # durable, group: how long to run
    threads: int = 0  # group: appending threads
    dataset: int = 0  # read: records in the log; readsegs, open: sealed segments
    log_records: int = 0  # readsegs: records in the log, however many segments hold them
    cold: bool = False  # replay: page cache dropped before, open timed with the scan
    readonly: bool = False  # open: segwal.open(readonly=True)
    description: str = ""


def size_label(size: int) -> str:
    return f"{size // KiB}KiB" if size % KiB == 0 else f"{size}B"


@dataclass(frozen=True)
class Sizes:
    batch: dict[int, int]  # record size -> records
    single: dict[int, int]
    replay: dict[int, int]
    durable_s: float
    durable_max: int
    group_s: float
    reads: int
    segments: int
    read_segments: tuple[int, int]  # readsegs: a log of few and of many sealed segments
    opens: int


FULL = Sizes(
    batch={100: 200_000, KiB: 50_000, 64 * KiB: 2_000},
    single={100: 30_000, KiB: 20_000, 64 * KiB: 2_000},
    replay={100: 200_000, KiB: 50_000},
    durable_s=1.5,
    durable_max=20_000,
    group_s=1.0,
    reads=20_000,
    segments=1000,
    read_segments=(200, 4000),
    opens=5,
)
QUICK = Sizes(
    batch={100: 10_000, KiB: 3_000, 64 * KiB: 100},
    single={100: 2_000, KiB: 1_000, 64 * KiB: 100},
    replay={100: 10_000, KiB: 3_000},
    durable_s=0.1,
    durable_max=1_000,
    group_s=0.1,
    reads=1_000,
    segments=1000,
    read_segments=(20, 400),
    opens=1,
)
THREADS = (1, 4, 16, 64)
AIO_TASKS = (1, 16, 256, 1000)  # asyncio tasks appending durably through segwal.aio


def batch_size(record_size: int) -> int:
    """Records per batch: 1000, but 100 for 64 KiB records (6.5 MB per batch)."""
    return 100 if record_size >= 64 * KiB else 1000


def build_cases(quick: bool) -> list[Case]:
    """Every workload, in report order."""
    sz = QUICK if quick else FULL
    cases: list[Case] = []
    for size, n in sz.batch.items():
        b = batch_size(size)
        cases.append(
            Case(
                f"batch-{size_label(size)}",
                "buffered",
                "batch",
                size,
                records=n,
                batch=b,
                description=f"{n} x {size} B in batches of {b}, no per-record sync, "
                "one barrier at the end",
            )
        )
    for size, n in sz.single.items():
        cases.append(
            Case(
                f"single-{size_label(size)}",
                "buffered",
                "single",
                size,
                records=n,
                description=f"{n} single-record appends of {size} B, no per-record sync, "
                "one barrier at the end",
            )
        )
    cases.append(
        Case(
            "durable-100B",
            "durable",
            "durable",
            100,
            records=sz.durable_max,
            seconds=sz.durable_s,
            description=f"durable appends of 100 B from one thread, {sz.durable_s} s "
            f"or {sz.durable_max} appends",
        )
    )
    cases.append(
        Case(
            "durable-100B-prealloc",
            "durable",
            "durable-prealloc",
            100,
            records=sz.durable_max,
            seconds=sz.durable_s,
            description="as durable-100B with segwal.open(preallocate=True), against raw "
            "overwrites of space posix_fallocate'd in the same 1 MiB steps",
        )
    )
    cases.append(
        Case(
            "durable-100B-direct",
            "durable",
            "durable-direct",
            100,
            records=sz.durable_max,
            seconds=sz.durable_s,
            description="as durable-100B with segwal.open(direct_io=True), against raw "
            "O_DIRECT writes of 4 KiB blocks (the last one rewritten per record) into "
            "fallocated space, fdatasync each",
        )
    )
    for t in THREADS:
        cases.append(
            Case(
                f"group-{t}t",
                "group",
                "group",
                100,
                seconds=sz.group_s,
                threads=t,
                description=f"{t} threads x durable appends of 100 B for {sz.group_s} s",
            )
        )
    for t in AIO_TASKS:
        cases.append(
            Case(
                f"aio-{t}tasks",
                "group",
                "aio",
                100,
                seconds=sz.group_s,
                threads=t,
                description=f"{t} asyncio tasks x durable `await wal.append` of 100 B through "
                f"segwal.aio for {sz.group_s} s",
            )
        )
    for size, n in sz.replay.items():
        for cold in (False, True):
            temp = "cold" if cold else "warm"
            cases.append(
                Case(
                    f"replay-{size_label(size)}-{temp}",
                    "replay",
                    "replay",
                    size,
                    records=n,
                    cold=cold,
                    description=f"full replay of {n} x {size} B, {temp} page cache",
                )
            )
    replay_100 = sz.replay[100]
    cases.append(
        Case(
            "replay-100B-frames",
            "replay",
            "replayframes",
            100,
            records=replay_100,
            description="replay-100B-warm's log through wal.replay_frames(), each payload "
            "taken by the same counting loop (segwal only)",
        )
    )
    cases.append(
        Case(
            "read-100B",
            "read",
            "read",
            100,
            records=sz.reads,
            dataset=sz.replay[100],
            description=f"{sz.reads} random point reads in a log of {sz.replay[100]} x 100 B",
        )
    )
    cases.append(
        Case(
            "read-100B-ro",
            "read",
            "readview",
            100,
            records=sz.reads,
            dataset=sz.replay[100],
            readonly=True,
            description="the same reads through segwal.open(readonly=True) (segwal only)",
        )
    )
    # The same records (and frames) in few or many segments: only the segment count
    # differs, so the pair shows whether a read grows with it.
    held = max(sz.read_segments) * SEGMENT_RECORDS
    for count in sz.read_segments:
        cases.append(
            Case(
                f"read-100B-{count}seg",
                "read",
                "readsegs",
                100,
                records=sz.reads,
                dataset=count,
                log_records=held,
                description=f"{sz.reads} random point reads in a log of {held} x 100 B "
                f"in {count} sealed segments (batches of {SEGMENT_RECORDS}), each batch read "
                "once before (segwal only)",
            )
        )
    for readonly in (True, False):
        mode = "ro" if readonly else "rw"
        cases.append(
            Case(
                f"open-{sz.segments}seg-{mode}",
                "open",
                "open",
                records=sz.opens,
                dataset=sz.segments,
                readonly=readonly,
                description=f"segwal.open + close of a log of {sz.segments} sealed segments, "
                f"{'readonly' if readonly else 'writable'}",
            )
        )
    return cases


# -- payloads ----------------------------------------------------------------------------

_pools: dict[int, list[bytes]] = {}


def pool(size: int) -> list[bytes]:
    """Random (incompressible) payloads of ``size`` bytes, made once per size."""
    if size not in _pools:
        _pools[size] = [os.urandom(size) for _ in range(_POOL_SIZE)]
    return _pools[size]


def sequence(size: int, n: int) -> list[bytes]:
    """n payload references (distinct objects cycle every _POOL_SIZE), built untimed."""
    p = pool(size)
    return [p[i % _POOL_SIZE] for i in range(n)]


def batches(size: int, n: int, batch: int) -> list[list[bytes]]:
    seq = sequence(size, n)
    return [seq[i : i + batch] for i in range(0, n, batch)]


def random_lsns(n: int, records: int, seed: int = 20240901) -> list[int]:
    """The same n random LSNs in 1..records for every contender."""
    rng = random.Random(seed)
    return [rng.randint(1, records) for _ in range(n)]


# -- the timed loops ---------------------------------------------------------------------


def _time_buffered(
    peer: Peer, path: str, call: str, work: Sequence[Any], records: int, payload_bytes: int
) -> Sample:
    """``writer.<call>(item)`` for every item, then one barrier, all inside the clock."""
    writer = peer.writer(path, durable=False)
    try:
        append = getattr(writer, call)  # a bound method: no wrapper in the loop
        gc.collect()
        t0 = time.perf_counter()
        for item in work:
            append(item)
        t1 = time.perf_counter()
        writer.barrier()
        dt = time.perf_counter() - t0
        syncs = writer.syncs()
    finally:
        writer.close()
    return Sample(records, payload_bytes, dt, syncs, {"sync_s": t0 + dt - t1})


def time_batch(peer: Peer, path: str, work: list[list[bytes]]) -> Sample:
    n = sum(map(len, work))
    size = len(work[0][0]) if work and work[0] else 0
    return _time_buffered(peer, path, "append_batch", work, n, n * size)


def time_single(peer: Peer, path: str, work: list[bytes]) -> Sample:
    return _time_buffered(peer, path, "append", work, len(work), sum(map(len, work)))


def time_durable(
    peer: Peer, path: str, payload: bytes, seconds: float, max_n: int, trick: str = ""
) -> Sample:
    """Durable single appends; with ``trick`` ("prealloc") through the peer's writer using
    it (only segwal and raw have one: the rows compare like with like)."""
    writer = peer.trick_writer(path, trick) if trick else peer.writer(path, durable=True)  # type: ignore[attr-defined]
    try:
        append = writer.append
        clock = time.perf_counter
        gc.collect()
        t0 = clock()
        deadline = t0 + seconds
        n = 0
        while n < max_n:
            append(payload)
            n += 1
            if clock() >= deadline:
                break
        dt = clock() - t0
        syncs = writer.syncs()
    finally:
        writer.close()
    return Sample(n, n * len(payload), dt, syncs)


def time_group(peer: Peer, path: str, payload: bytes, seconds: float, threads: int) -> Sample:
    writer = peer.writer(path, durable=True)
    try:

        def make(_i: int) -> Callable[[], object]:
            append = writer.thread_appender()
            return lambda: append(payload)

        n, dt = run_threads(threads, seconds, make)
        syncs = writer.syncs()
    finally:
        writer.close()
    return Sample(n, n * len(payload), dt, syncs)


def time_aio(path: str, payload: bytes, seconds: float, tasks: int) -> Sample:
    """``tasks`` asyncio tasks append durably through segwal.aio's writer thread."""
    import asyncio

    import segwal.aio

    async def main() -> Sample:
        async with segwal.aio.open(path) as wal:
            before = wal.stats().fsyncs
            done = 0
            stop = False
            started: dict[int, float] = {}  # LSN -> when its append was called
            latencies: list[float] = []

            async def worker() -> None:
                nonlocal done
                while not stop:
                    t = time.perf_counter()
                    lsn = await wal.append(payload)
                    started[lsn] = t
                    done += 1

            async def follower() -> None:
                # In-process follow latency: append called -> record seen by a follower.
                async for record in wal.follow(1, timeout=0.5):
                    seen = time.perf_counter()
                    if record.lsn in started:
                        latencies.append(seen - started.pop(record.lsn))
                    if stop and not started:
                        return

            gc.collect()
            t0 = time.perf_counter()
            following = asyncio.create_task(follower())
            workers = [asyncio.create_task(worker()) for _ in range(tasks)]
            await asyncio.sleep(seconds)
            stop = True
            await asyncio.gather(*workers)
            dt = time.perf_counter() - t0
            await following
            extra = {}
            if latencies:
                latencies.sort()
                extra["follow_p50_ms"] = latencies[len(latencies) // 2] * 1e3
                extra["follow_p99_ms"] = latencies[int(len(latencies) * 0.99)] * 1e3
            return Sample(done, done * len(payload), dt, wal.stats().fsyncs - before, extra)

    return asyncio.run(main())


def time_replay(
    peer: Peer, path: str, size: int, expected: int, drop: Callable[[str], object] | None
) -> Sample:
    """A full scan; with ``drop`` (cold) the cache is dropped and the open is timed too."""
    if drop is not None:
        drop(path)
    gc.collect()
    t0 = time.perf_counter()
    reader = peer.reader(path)
    t1 = time.perf_counter()
    try:
        n = consume(reader.scan())
        t2 = time.perf_counter()
    finally:
        reader.close()
    check_count(peer.name, n, expected)
    dt = t2 - t0 if drop is not None else t2 - t1
    return Sample(n, n * size, dt, extra={"open_ms": (t1 - t0) * 1e3})


def time_replay_frames(path: str, size: int, expected: int) -> Sample:
    """A warm full scan through ``Wal.replay_frames``: the counting loop of ``consume`` over
    every payload of every frame (so the consumer still touches each record)."""
    gc.collect()
    t0 = time.perf_counter()
    wal = segwal.open(path, sync="never")
    t1 = time.perf_counter()
    try:
        n = 0
        for frame in wal.replay_frames():
            for _payload in frame.payloads:
                n += 1
        t2 = time.perf_counter()
    finally:
        wal.close()
    check_count("segwal", n, expected)
    return Sample(n, n * size, t2 - t1, extra={"open_ms": (t1 - t0) * 1e3})


def time_reads(peer: Peer, path: str, size: int, lsns: list[int]) -> Sample:
    return _time_gets(peer.reader(path), peer.name, size, lsns)


def _time_gets(
    reader: Reader, name: str, size: int, lsns: list[int], warm: Sequence[int] = ()
) -> Sample:
    try:
        get = reader.get
        # Warm-up, untimed: lazy indexes, the payloads' pages (and ``warm``, when given).
        for lsn in chain(lsns[:100], warm):
            got = get(lsn)
            if len(got) != size:
                raise RuntimeError(f"{name}: read({lsn}) gave {len(got)} bytes, not {size}")
        gc.collect()
        t0 = time.perf_counter()
        for lsn in lsns:
            get(lsn)
        dt = time.perf_counter() - t0
    finally:
        reader.close()
    return Sample(len(lsns), len(lsns) * size, dt)


def build_segments(path: str, segments: int) -> None:
    """A segwal log of ``segments`` sealed segments (plus the active one), via rotate()."""
    wal = segwal.open(path, sync="never")
    try:
        payload = pool(100)[0]
        for _ in range(segments):
            wal.append(payload)
            wal.rotate()
    finally:
        wal.close()


def build_read_segments(path: str, segments: int, records: int) -> None:
    """A segwal log of ``records`` x 100 B in ``segments`` sealed segments, written in
    batches of ``SEGMENT_RECORDS``."""
    wal = segwal.open(path, sync="never")
    try:
        batch = pool(100)[:SEGMENT_RECORDS]
        for _ in range(segments):
            for _ in range(records // segments // SEGMENT_RECORDS):
                wal.append_batch(batch)
            wal.rotate()
    finally:
        wal.close()


def time_segwal_reads(
    path: str, size: int, lsns: list[int], readonly: bool, warm: Sequence[int] = ()
) -> Sample:
    """Point reads through segwal alone: a readonly view, or a log of many segments."""
    return _time_gets(SegwalReader(path, readonly=readonly), "segwal", size, lsns, warm)


def time_opens(path: str, readonly: bool, opens: int) -> Sample:
    """``opens`` times segwal.open + close; the rate is opens per second."""
    gc.collect()
    t0 = time.perf_counter()
    for _ in range(opens):
        segwal.open(path, sync="never", readonly=readonly).close()
    dt = time.perf_counter() - t0
    return Sample(opens, 0, dt, extra={"ms_per_open": dt / opens * 1e3})


# -- helpers -----------------------------------------------------------------------------


def consume(records: Iterable[object]) -> int:
    """The same minimal consumer loop for every contender: take each record, count it."""
    n = 0
    for _rec in records:
        n += 1
    return n


def check_count(who: str, n: int, expected: int) -> None:
    if n != expected:
        raise RuntimeError(f"{who} replayed {n} records, expected {expected}")


def run_threads(
    threads: int, seconds: float, make: Callable[[int], Callable[[], object]]
) -> tuple[int, float]:
    """Run ``threads`` loops of ``make(i)()`` for ``seconds``; (operations done, elapsed).

    Each thread builds its operation (e.g. opens its connection) before the start barrier;
    the clock runs from the barrier until the last thread has finished its last operation.
    """
    counts = [0] * threads
    errors: list[BaseException] = []
    running = [True]
    barrier = threading.Barrier(threads + 1)

    def worker(i: int) -> None:
        try:
            op = make(i)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()
            return
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return
        n = 0
        try:
            while running[0]:
                op()
                n += 1
        except BaseException as exc:
            errors.append(exc)
        counts[i] = n

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in workers:
        t.start()
    gc.collect()
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait()
    t0 = time.perf_counter()
    if not errors:
        time.sleep(seconds)
    running[0] = False
    for t in workers:
        t.join()
    dt = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} thread(s) failed") from errors[0]
    return sum(counts), dt
