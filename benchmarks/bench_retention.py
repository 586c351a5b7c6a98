#!/usr/bin/env python3
"""Retention at scale: reopen, retention_plan() and apply_retention() on a log of 10,000
sealed segments, and the proof that retention decides from segment metadata alone.

Every file operation goes through a counting FileSystem (it implements segwal's FileSystem
protocol by delegating to segwal.OsFileSystem), so the table shows, per phase, how many
preads (and bytes) segwal made: retention_plan() and apply_retention() must make none, since
they decide from the seals read at open and delete whole files. The script exits 1 if they
read anything.

    python benchmarks/bench_retention.py                  # 10,000 segments
    python benchmarks/bench_retention.py --quick          # 1,000 segments, a smoke test
    python benchmarks/bench_retention.py --segments 50000 --dir /var/tmp --json out.json

Building the log (one 100-byte record per segment, sealed by rotate()) skips the barriers
(fdatasync, directory fsync) unless --real-sync is given: they make the build 10-50x slower
and do not change the log's contents. The timed phases run with real barriers. The log's
clock is injected: record i is stamped i seconds after the first, and "now" is one second
after the last, so a max_age of 10% of the span deletes 90% of the segments.

The table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

try:
    import segwal
except ImportError:  # running from a checkout without an installed segwal
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    import segwal

T0_US = 1_700_000_000_000_000
RECORD = b"r" * 100


# -- the counting file system ------------------------------------------------------------


class CountingHandle:
    """A FileHandle that counts reads and writes, delegating to a real one."""

    def __init__(self, fs: CountingFS, inner: Any) -> None:
        self._fs = fs
        self._inner = inner

    @property
    def path(self) -> str:
        return str(self._inner.path)

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        self._fs.count["writes"] += 1
        self._fs.count["write_bytes"] += memoryview(data).nbytes
        self._inner.pwrite(data, offset)

    def pread(self, size: int, offset: int) -> bytes:
        data: bytes = self._inner.pread(size, offset)
        self._fs.count["preads"] += 1
        self._fs.count["pread_bytes"] += len(data)
        return data

    def size(self) -> int:
        return int(self._inner.size())

    def truncate(self, size: int) -> None:
        self._fs.count["truncates"] += 1
        self._inner.truncate(size)

    def sync(self, site: str) -> None:
        self._fs.count["fsyncs"] += 1
        if not self._fs.skip_barriers:
            self._inner.sync(site)

    def close(self) -> None:
        self._inner.close()


class CountingFS:
    """segwal's FileSystem protocol over segwal.OsFileSystem, counting every call."""

    def __init__(self) -> None:
        self.inner = segwal.OsFileSystem()
        self.count: Counter[str] = Counter()
        self.skip_barriers = False

    def list_dir(self, path: str) -> list[Any]:
        self.count["lists"] += 1
        return list(self.inner.list_dir(path))

    def make_dir(self, path: str) -> bool:
        return bool(self.inner.make_dir(path))

    def open_read(self, path: str) -> CountingHandle:
        self.count["opens"] += 1
        return CountingHandle(self, self.inner.open_read(path))

    def open_write(self, path: str) -> CountingHandle:
        self.count["opens"] += 1
        return CountingHandle(self, self.inner.open_write(path))

    def create(self, path: str) -> CountingHandle:
        self.count["creates"] += 1
        return CountingHandle(self, self.inner.create(path))

    def rename(self, src: str, dst: str) -> None:
        self.count["renames"] += 1
        self.inner.rename(src, dst)

    def unlink(self, path: str) -> None:
        self.count["unlinks"] += 1
        self.inner.unlink(path)

    def sync_dir(self, path: str, site: str) -> None:
        self.count["dir_fsyncs"] += 1
        if not self.skip_barriers:
            self.inner.sync_dir(path, site)

    def lock(self, path: str, *, exclusive: bool) -> Any:
        handle = self.inner.lock(path, exclusive=exclusive)
        return None if handle is None else CountingHandle(self, handle)


# -- phases ------------------------------------------------------------------------------

COLUMNS = ("preads", "pread_bytes", "opens", "lists", "unlinks", "fsyncs", "dir_fsyncs")


@dataclass
class Phase:
    phase: str
    seconds: float
    preads: int = 0
    pread_bytes: int = 0
    opens: int = 0
    lists: int = 0
    unlinks: int = 0
    fsyncs: int = 0
    dir_fsyncs: int = 0
    note: str = ""


@contextmanager
def measured(fs: CountingFS, name: str, phases: list[Phase]) -> Iterator[Phase]:
    before = fs.count.copy()
    phase = Phase(name, 0.0)
    start = time.perf_counter()
    yield phase
    phase.seconds = time.perf_counter() - start
    delta = fs.count - before
    for column in COLUMNS:
        setattr(phase, column, delta[column])
    phases.append(phase)
    print(f"  {name}: {phase.seconds:.3f} s", file=sys.stderr)


class Clock:
    """Microseconds; moves only when told (the log's injected clock)."""

    def __init__(self) -> None:
        self.now_us = T0_US

    def __call__(self) -> int:
        return self.now_us


def build(directory: str, segments: int, fs: CountingFS, *, real_sync: bool) -> float:
    """``segments`` sealed segments of one record each, plus one record in the active one."""
    clock = Clock()
    fs.skip_barriers = not real_sync
    start = time.perf_counter()
    with segwal.open(directory, sync="never", filesystem=fs, clock=clock) as wal:
        for i in range(segments):
            clock.now_us = T0_US + i * 1_000_000
            wal.append(RECORD)
            wal.rotate()
            if (i + 1) % 1000 == 0:
                print(f"  built {i + 1} segments", file=sys.stderr)
        clock.now_us = T0_US + segments * 1_000_000
        wal.append(RECORD)
    fs.skip_barriers = False
    return time.perf_counter() - start


def run(segments: int, directory: str, *, real_sync: bool) -> dict[str, Any]:
    fs = CountingFS()
    log_dir = os.path.join(directory, "wal")
    print(f"building {segments} sealed segments in {log_dir}", file=sys.stderr)
    build_seconds = build(log_dir, segments, fs, real_sync=real_sync)
    print(f"  built in {build_seconds:.1f} s", file=sys.stderr)

    now = Clock()
    now.now_us = T0_US + (segments + 1) * 1_000_000
    max_age = segments * 0.1  # seconds: the newest ~10% stay
    phases: list[Phase] = []
    with measured(fs, "open (recovery)", phases) as phase:
        wal = segwal.open(
            log_dir, sync="never", filesystem=fs, clock=now, retention_max_age=max_age
        )
    phase.note = f"{len(wal.segments())} segments"
    try:
        with measured(fs, "retention_plan", phases) as phase:
            plan = wal.retention_plan()
        doomed = sum(d.delete for d in plan)
        phase.note = f"{len(plan)} decisions, {doomed} to delete"
        with measured(fs, "apply_retention", phases) as phase:
            result = wal.apply_retention()
        deferred = sum(d.deferred for d in result.deleted)
        phase.note = f"{len(result.deleted)} deleted, {result.bytes_reclaimed} bytes"
        first_lsn = result.first_lsn
    finally:
        wal.close()
    with (
        measured(fs, "reopen after", phases) as phase,
        segwal.open(log_dir, sync="never", filesystem=fs, clock=now) as wal,
    ):
        phase.note = f"{len(wal.segments())} segments, first LSN {wal.first_lsn}"
    return {
        "segments": segments,
        "deleted": len(result.deleted),
        "deferred": deferred,
        "first_lsn": first_lsn,
        "build_seconds": build_seconds,
        "build_barriers": real_sync,
        "phases": [asdict(p) for p in phases],
    }


# -- reporting ---------------------------------------------------------------------------


def filesystem_of(path: str) -> str:
    """The file system type and mount point ``path`` is on, from /proc/mounts."""
    real = os.path.realpath(path)
    best = ("?", "")
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                inside = len(fields) >= 3 and (real + "/").startswith(fields[1].rstrip("/") + "/")
                if inside and len(fields[1]) >= len(best[1]):
                    best = (fields[2], fields[1])
    except OSError:
        pass
    return f"{best[0]} ({best[1]})"


def table(result: dict[str, Any]) -> list[str]:
    header = ["phase", "seconds", *COLUMNS, "note"]
    rows = [header, ["---"] * len(header)]
    for p in result["phases"]:
        rows.append([p["phase"], f"{p['seconds']:.3f}", *(str(p[c]) for c in COLUMNS), p["note"]])
    return ["| " + " | ".join(row) + " |" for row in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=10_000, help="sealed segments to build")
    parser.add_argument("--quick", action="store_true", help="1,000 segments (a smoke test)")
    parser.add_argument("--dir", default="/var/tmp", help="where the log goes (default /var/tmp)")
    parser.add_argument("--json", dest="json_path", help="also write the results as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the log directory")
    parser.add_argument(
        "--real-sync", action="store_true", help="build with real barriers (much slower)"
    )
    args = parser.parse_args(argv)
    segments = 1000 if args.quick else args.segments
    if segments < 10:
        parser.error("--segments must be at least 10")
    os.makedirs(args.dir, exist_ok=True)
    directory = tempfile.mkdtemp(prefix="segwal-bench-retention-", dir=args.dir)
    try:
        result = run(segments, directory, real_sync=args.real_sync)
    finally:
        if args.keep:
            print(f"kept {directory}", file=sys.stderr)
        else:
            shutil.rmtree(directory, ignore_errors=True)
    result["machine"] = {
        "python": platform.python_version(),
        "segwal": segwal.__version__,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "filesystem": filesystem_of(args.dir),
    }
    print(f"# segwal retention benchmark: {segments} sealed segments")
    print()
    print(f"- segwal {segwal.__version__}, Python {platform.python_version()}")
    print(f"- directory: {args.dir} on {result['machine']['filesystem']}")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"- {os.cpu_count()} CPUs, load average {load}")
    barriers = "with" if args.real_sync else "without"
    print(f"- build: {result['build_seconds']:.1f} s ({barriers} barriers, untimed below)")
    print()
    for line in table(result):
        print(line)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=2) + "\n")
    reads = {
        p["phase"]: p["preads"]
        for p in result["phases"]
        if p["phase"] in ("retention_plan", "apply_retention")
    }
    print()
    if any(reads.values()):
        print(f"FAILED: retention read the log's files: {reads}")
        return 1
    print("retention_plan and apply_retention read no payload: 0 preads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
