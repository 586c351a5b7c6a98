"""The benchmark's cases: which workloads run, at which sizes, in which table of the report.

``build_cases`` lists every row (the quick run a smaller set); the timed loops that run
them are in ``workloads`` and ``readloads``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass
from segwal.bench.workloads import SEGMENT_RECORDS

KiB = 1024
# Workload kinds, in report order, with the title of their table.
GROUPS: dict[str, str] = {
    "buffered": "Buffered append",
    "durable": "Durable append, one thread",
    "group": "Group commit: durable appends from N threads",
    "replay": "Full replay",
    "read": "Random read by key / LSN",
    "open": "Opening a log of 1,000 sealed segments",
}


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
