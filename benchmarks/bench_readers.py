#!/usr/bin/env python3
"""The read side of segwal: point reads, replay, follow latency and replay memory.

    python benchmarks/bench_readers.py --dir /var/tmp             # 10M x 100 B, a few minutes
    python benchmarks/bench_readers.py --records 2000000          # a smaller log
    python benchmarks/bench_readers.py --quick                    # small sizes, < 30 s

What is measured:

- ``read(lsn)`` latency over random LSNs of a log of ``--records`` 100 B records (warm: the
  sparse indexes are loaded and the data is in the page cache), through the writer's view
  and through a readonly view (which looks at the directory again before every read).
- ``replay()`` of that log and of a log of 1 KiB records (``--records / 10`` of them):
  records/s and payload MB/s (1 MB = 10^6 bytes), with the minimal consumer loop.
- ``follow()`` latency from just before ``append`` to delivery: in the writer's process
  (sync="always", and unsynced followers of a sync="never" log) and from a readonly follower
  in another process (the writer appends in this process, sync="always"). Payloads carry
  ``time.monotonic_ns()``, which is CLOCK_MONOTONIC, system-wide on Linux. Appends are
  paced so that latency is measured, not queueing.
- Peak memory of a full replay in a fresh process under an address-space limit much smaller
  than the log: peak RSS (VmHWM) for the 100 B log, and the ``tracemalloc`` peak for
  the 1 KiB log (tracemalloc slows replay down several times, so it gets the log with fewer
  records).

The table goes to stdout, progress to stderr. The log directories are created in a fresh
``segwal-bench-readers-*`` directory inside ``--dir`` and removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

try:
    import segwal
except ImportError:  # running from a checkout without an installed segwal
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    import segwal

MiB = 1 << 20
_STAMP = struct.Struct("<q")
_POOL = 1024  # distinct payloads per size; records cycle through them


@dataclass(frozen=True)
class Sizes:
    records: int  # 100 B records in the main log
    records_1k: int  # 1 KiB records in the second log
    reads: int  # random point reads through the writer's view
    readonly_reads: int  # random point reads through a readonly view
    follow: int  # follow samples per mode
    prefill: int  # bytes in the active segment for the second cross-process follow run
    memory_slack: int  # address space allowed above the child's own at start


FULL = Sizes(10_000_000, 1_000_000, 10_000, 200, 2000, 32 * MiB, 192 * MiB)
QUICK = Sizes(20_000, 5_000, 500, 20, 100, 2 * MiB, 192 * MiB)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentiles(samples_ns: list[int]) -> tuple[float, float]:
    """p50 and p99 in microseconds."""
    ordered = sorted(samples_ns)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, (len(ordered) * 99) // 100)]
    return p50 / 1000, p99 / 1000


def fmt_us(us: float) -> str:
    if us >= 10_000:
        return f"{us / 1000:,.0f} ms"
    if us >= 1000:
        return f"{us / 1000:,.2f} ms"
    return f"{us:,.0f} µs"


def dir_bytes(path: str) -> int:
    return sum(p.stat().st_size for p in Path(path).iterdir() if p.is_file())


def filesystem_of(path: str) -> str:
    best, fstype = "", "?"
    real = os.path.realpath(path)
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) > 2 and real.startswith(fields[1]) and len(fields[1]) > len(best):
                    best, fstype = fields[1], fields[2]
    except OSError:
        pass
    return f"{fstype} ({best or '?'})"


# -- building logs --------------------------------------------------------------------------


def build_log(path: str, count: int, size: int) -> tuple[float, int]:
    """Append ``count`` records of ``size`` bytes in batches of 1000, sync="never"."""
    rng = random.Random(size)
    pool = [rng.randbytes(size) for _ in range(_POOL)] * 2
    started = time.perf_counter()
    with segwal.open(path, sync="never") as wal:
        done = 0
        while done < count:
            n = min(1000, count - done)
            start = done % _POOL
            wal.append_batch(pool[start : start + n])
            done += n
            if done % 1_000_000 == 0:
                progress(f"  {done:,} records")
        wal.sync()
    return time.perf_counter() - started, dir_bytes(path)


# -- point reads ----------------------------------------------------------------------------


def random_reads(wal: segwal.Wal, count: int, samples: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    lsns = [rng.randint(1, count) for _ in range(samples)]
    timings = []
    clock = time.perf_counter_ns
    for lsn in lsns:
        started = clock()
        wal.read(lsn)
        timings.append(clock() - started)
    return timings


# -- replay ---------------------------------------------------------------------------------


def replay(path: str) -> tuple[int, int, float]:
    with segwal.open(path, readonly=True) as wal:
        started = time.perf_counter()
        n = nbytes = 0
        for record in wal.replay():
            n += 1
            nbytes += len(record.payload)
        return n, nbytes, time.perf_counter() - started


# -- follow ---------------------------------------------------------------------------------


def stamped(size: int) -> bytes:
    return _STAMP.pack(time.monotonic_ns()) + bytes(size - _STAMP.size)


def pace(interval: float, next_at: float) -> float:
    delay = next_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    return max(next_at, time.monotonic()) + interval


def follow_in_process(path: str, samples: int, *, unsynced: bool) -> list[int]:
    latencies: list[int] = []
    with segwal.open(path, sync="never" if unsynced else "always") as wal:
        start = wal.next_lsn

        def follower() -> None:
            for record in wal.follow(start, timeout=10, unsynced=unsynced):
                latencies.append(time.monotonic_ns() - _STAMP.unpack_from(record.payload)[0])
                if len(latencies) == samples:
                    return

        thread = threading.Thread(target=follower)
        thread.start()
        time.sleep(0.05)
        next_at = time.monotonic()
        for _ in range(samples):
            next_at = pace(0.001, next_at)
            wal.append(stamped(100))
        thread.join(30)
    return latencies


def follow_cross_process(path: str, samples: int, prefill: int) -> list[int]:
    """This process appends (sync="always"); a readonly follower in a child reports latency."""
    with segwal.open(path, sync="always") as wal:
        if prefill:
            filler = bytes(1000)
            wal.append_batch([filler] * (prefill // 1000))
        start = wal.next_lsn
        child = subprocess.Popen(
            [sys.executable, __file__, "_follower", path, str(start), str(samples)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "READY"
        time.sleep(0.1)
        next_at = time.monotonic()
        for _ in range(samples):
            next_at = pace(0.002, next_at)
            wal.append(stamped(100))
        out, _ = child.communicate(timeout=120)
    if child.returncode != 0:
        raise RuntimeError(f"follower child failed with {child.returncode}")
    return list(json.loads(out))


def _follower_child(path: str, start: int, samples: int) -> None:
    latencies = []
    with segwal.open(path, readonly=True) as wal:
        print("READY", flush=True)
        for record in wal.follow(start, timeout=30):
            latencies.append(time.monotonic_ns() - _STAMP.unpack_from(record.payload)[0])
            if len(latencies) == samples:
                break
    print(json.dumps(latencies), flush=True)


# -- memory ---------------------------------------------------------------------------------


def _vm_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _memory_child(path: str, slack: int, use_tracemalloc: bool) -> None:
    limit = _vm_kib("VmSize") * 1024 + slack
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # /proc rather than getrusage: ru_maxrss keeps the parent's high-water mark across exec.
    before = _vm_kib("VmRSS")
    if use_tracemalloc:
        import tracemalloc

        tracemalloc.start()
    n = nbytes = 0
    with segwal.open(path, readonly=True) as wal:
        for record in wal.replay():
            n += 1
            nbytes += len(record.payload)
    peak = 0
    if use_tracemalloc:
        import tracemalloc

        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    after = _vm_kib("VmHWM")
    print(
        json.dumps(
            {
                "records": n,
                "bytes": nbytes,
                "limit": limit,
                "rss_before_kib": before,
                "rss_peak_kib": after,
                "tracemalloc_peak": peak,
            }
        ),
        flush=True,
    )


def measure_memory(path: str, slack: int, use_tracemalloc: bool) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, __file__, "_memory", path, str(slack), str(int(use_tracemalloc))],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"memory child failed: {out.stderr[-2000:]}")
    return dict(json.loads(out.stdout))


# -- the run --------------------------------------------------------------------------------


def run(sizes: Sizes, root: str) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []

    def timed(name: str, action: Callable[[], object]) -> object:
        progress(name)
        return action()

    log100 = os.path.join(root, "log-100B")
    seconds, size = build_log(log100, sizes.records, 100)
    progress(f"built {sizes.records:,} x 100 B in {seconds:.1f} s ({size / MiB:,.0f} MiB)")
    rows.append(
        (
            "build 100 B log (append_batch x1000, sync=never)",
            f"{sizes.records / seconds:,.0f} rec/s",
            f"{sizes.records:,} records, {size / MiB:,.0f} MiB on disk, {seconds:.1f} s",
        )
    )
    log1k = os.path.join(root, "log-1KiB")
    seconds_1k, size_1k = build_log(log1k, sizes.records_1k, 1024)
    progress(f"built {sizes.records_1k:,} x 1 KiB in {seconds_1k:.1f} s")

    with segwal.open(log100, sync="never") as wal:
        segments = len(wal.segments())
        active = wal.segments()[-1].size_bytes
        progress("random reads (warm-up)")
        random_reads(wal, sizes.records, min(2000, sizes.reads), seed=1)
        progress("random reads")
        p50, p99 = percentiles(random_reads(wal, sizes.records, sizes.reads, seed=2))
    rows.append(
        (
            f"read(lsn) random, writer view, {sizes.reads:,} warm",
            f"p50 {fmt_us(p50)}, p99 {fmt_us(p99)}",
            f"over {sizes.records:,} records in {segments} segments",
        )
    )
    with segwal.open(log100, readonly=True) as ro:
        progress("random reads, readonly view")
        random_reads(ro, sizes.records, 3, seed=3)
        p50, p99 = percentiles(random_reads(ro, sizes.records, sizes.readonly_reads, seed=4))
    rows.append(
        (
            f"read(lsn) random, readonly view, {sizes.readonly_reads:,}",
            f"p50 {fmt_us(p50)}, p99 {fmt_us(p99)}",
            f"each read re-plans the directory (active segment {active / MiB:,.1f} MiB)",
        )
    )

    for name, path, size_each in (("100 B", log100, 100), ("1 KiB", log1k, 1024)):
        progress(f"replay {name}")
        n, nbytes, secs = replay(path)
        rows.append(
            (
                f"replay {name}",
                f"{n / secs:,.0f} rec/s, {nbytes / secs / 1e6:,.0f} MB/s",
                f"{n:,} records of {size_each} B in {secs:.1f} s",
            )
        )

    for unsynced in (False, True):
        label = "unsynced, sync=never" if unsynced else "sync=always"
        progress(f"follow in-process ({label})")
        path = os.path.join(root, f"follow-in-{int(unsynced)}")
        p50, p99 = percentiles(follow_in_process(path, sizes.follow, unsynced=unsynced))
        rows.append(
            (
                f"follow in-process ({label})",
                f"p50 {fmt_us(p50)}, p99 {fmt_us(p99)}",
                f"{sizes.follow:,} appends 1 ms apart; append start to delivery",
            )
        )
    for prefill in (0, sizes.prefill):
        progress(f"follow cross-process (active segment +{prefill / MiB:.0f} MiB)")
        path = os.path.join(root, f"follow-x-{prefill}")
        p50, p99 = percentiles(follow_cross_process(path, sizes.follow // 2, prefill))
        rows.append(
            (
                f"follow cross-process, readonly, active segment {prefill / MiB:,.0f} MiB",
                f"p50 {fmt_us(p50)}, p99 {fmt_us(p99)}",
                f"{sizes.follow // 2:,} appends 2 ms apart, sync=always; append start to delivery",
            )
        )

    progress("replay peak memory (RSS)")
    rss = measure_memory(log100, sizes.memory_slack, use_tracemalloc=False)
    rows.append(
        (
            "replay peak memory, RSS, 100 B log",
            f"{rss['rss_peak_kib'] / 1024:,.1f} MiB peak RSS "
            f"(+{(rss['rss_peak_kib'] - rss['rss_before_kib']) / 1024:,.1f} MiB during replay)",
            f"{size / MiB:,.0f} MiB log, address space limited to "
            f"{rss['limit'] / MiB:,.0f} MiB; {rss['records']:,} records",
        )
    )
    progress("replay peak memory (tracemalloc)")
    traced = measure_memory(log1k, sizes.memory_slack, use_tracemalloc=True)
    rows.append(
        (
            "replay peak memory, tracemalloc, 1 KiB log",
            f"{traced['tracemalloc_peak'] / MiB:,.2f} MiB peak",
            f"{size_1k / MiB:,.0f} MiB log, {traced['records']:,} records; peak RSS "
            f"{traced['rss_peak_kib'] / 1024:,.1f} MiB",
        )
    )
    return rows


def print_table(rows: list[tuple[str, str, str]], sizes: Sizes, root: str, quick: bool) -> None:
    print("# segwal readers benchmark")
    print()
    print(f"- mode: {'quick' if quick else 'full'}; {sizes.records:,} x 100 B records")
    print(f"- directory: {root} on {filesystem_of(root)}")
    print(
        f"- machine: {os.cpu_count()} CPUs, {platform.machine()}, Linux {platform.release()}, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(f"- python {platform.python_version()}, segwal {segwal.__version__}")
    print()
    print("| measure | result | notes |")
    print("|---|---|---|")
    for name, result, notes in rows:
        print(f"| {name} | {result} | {notes} |")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "_follower":
        _follower_child(args[1], int(args[2]), int(args[3]))
        return 0
    if args and args[0] == "_memory":
        _memory_child(args[1], int(args[2]), args[3] == "1")
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for smoke tests")
    parser.add_argument("--records", type=int, help="100 B records in the main log")
    parser.add_argument("--dir", default="/var/tmp", help="where the logs go (not tmpfs)")
    parser.add_argument("--keep", action="store_true", help="keep the logs for inspection")
    options = parser.parse_args(args)
    sizes = QUICK if options.quick else FULL
    if options.records:
        records = max(1000, options.records)
        sizes = Sizes(
            records,
            max(1000, records // 10),
            sizes.reads,
            sizes.readonly_reads,
            sizes.follow,
            sizes.prefill,
            sizes.memory_slack,
        )
    os.makedirs(options.dir, exist_ok=True)
    root = tempfile.mkdtemp(prefix="segwal-bench-readers-", dir=options.dir)
    if "tmpfs" in filesystem_of(root):
        progress("warning: tmpfs makes fdatasync free; follow latencies with sync=always lie")
    started = time.perf_counter()
    try:
        rows = run(sizes, root)
    finally:
        if not options.keep:
            shutil.rmtree(root, ignore_errors=True)
    print_table(rows, sizes, root, options.quick)
    progress(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
