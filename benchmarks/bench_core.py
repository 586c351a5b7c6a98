#!/usr/bin/env python3
"""segwal vs sqlite3 (WAL mode) vs raw os.write + os.fdatasync, side by side in one run.

Every workload runs every contender once per repetition; repetitions are interleaved (and
the contender order rotates) so that machine noise hits all contenders alike. The table
reports the median of the repetitions. See benchmarks/README.md for what each workload
means and for the caveats.

    python benchmarks/bench_core.py                    # full run, ~3-5 minutes
    python benchmarks/bench_core.py --quick            # small sizes, < 20 s
    python benchmarks/bench_core.py --only 'batch|replay' --repeat 3 --dir /var/tmp
    python benchmarks/bench_core.py --json results.json

The table goes to stdout; progress and warnings go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

try:
    import segwal
except ImportError:  # running from a checkout without an installed segwal
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    import segwal

CONTENDERS = ("segwal", "sqlite3", "raw", "sqlite3+lock")
# Contenders that only make sense for some workload kinds (the rest run everywhere).
APPLIES = {"sqlite3+lock": {"group"}}
KiB = 1024
_LEN = struct.Struct("<I")
_POOL_SIZE = 1024  # distinct payloads per record size; records cycle through them


# -- results -----------------------------------------------------------------------------


@dataclass
class Sample:
    """One timed run of one contender on one workload."""

    records: int
    payload_bytes: int
    seconds: float
    syncs: int | None = None  # fdatasync calls, where the contender can count them
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def mbps(self) -> float:
        return self.payload_bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0


@dataclass
class Case:
    """One workload at one size: a row group of the table."""

    name: str
    kind: str  # batch, single, durable, group, replay
    record_size: int
    records: int = 0  # batch, single, replay: how many records
    batch: int = 0  # batch: records per append_batch / transaction
    seconds: float = 0.0  # durable, group: how long to run
    threads: int = 0  # group: appending threads
    description: str = ""


# -- payloads ----------------------------------------------------------------------------

_pools: dict[int, list[bytes]] = {}


def pool(size: int) -> list[bytes]:
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


def raw_encode(batch: list[bytes]) -> bytes:
    """Length-prefixed records, the raw baseline's whole format (no checksum, no header)."""
    pack = _LEN.pack
    return b"".join([part for p in batch for part in (pack(len(p)), p)])


# -- contender: segwal --------------------------------------------------------------------


def segwal_open(path: str, sync: str) -> segwal.Wal:
    return segwal.open(path, sync=sync)  # type: ignore[arg-type]


def segwal_batch(path: str, work: list[list[bytes]]) -> Sample:
    wal = segwal_open(path, "never")
    try:
        gc.collect()
        t0 = time.perf_counter()
        for b in work:
            wal.append_batch(b)
        t1 = time.perf_counter()
        wal.sync()
        dt = time.perf_counter() - t0
        st = wal.stats()
    finally:
        wal.close()
    return Sample(st.records, st.payload_bytes, dt, st.fsyncs, {"sync_s": t0 + dt - t1})


def segwal_single(path: str, work: list[bytes]) -> Sample:
    wal = segwal_open(path, "never")
    try:
        append = wal.append
        gc.collect()
        t0 = time.perf_counter()
        for p in work:
            append(p)
        t1 = time.perf_counter()
        wal.sync()
        dt = time.perf_counter() - t0
        st = wal.stats()
    finally:
        wal.close()
    return Sample(st.records, st.payload_bytes, dt, st.fsyncs, {"sync_s": t0 + dt - t1})


def segwal_durable(path: str, payload: bytes, seconds: float, max_n: int) -> Sample:
    wal = segwal_open(path, "always")
    try:
        append = wal.append
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
        st = wal.stats()
    finally:
        wal.close()
    return Sample(n, n * len(payload), dt, st.fsyncs)


def segwal_group(path: str, payload: bytes, seconds: float, threads: int) -> Sample:
    wal = segwal_open(path, "always")
    try:

        def make(_i: int) -> Callable[[], object]:
            append = wal.append
            return lambda: append(payload)

        n, dt = run_threads(threads, seconds, make)
        st = wal.stats()
    finally:
        wal.close()
    return Sample(n, n * len(payload), dt, st.fsyncs)


def segwal_prepare(path: str, size: int, n: int) -> None:
    wal = segwal_open(path, "never")
    try:
        for b in batches(size, n, 1000):
            wal.append_batch(b)
    finally:
        wal.close()


def segwal_replay(path: str, size: int, expected: int) -> Sample:
    t0 = time.perf_counter()
    wal = segwal_open(path, "never")  # opening runs recovery: reported as a note
    open_s = time.perf_counter() - t0
    try:
        gc.collect()
        t0 = time.perf_counter()
        n = consume(wal.replay())
        dt = time.perf_counter() - t0
    finally:
        wal.close()
    check_count("segwal", n, expected)
    return Sample(n, n * size, dt, extra={"open_ms": open_s * 1e3})


# -- contender: sqlite3 -------------------------------------------------------------------

_INSERT = "INSERT INTO log(payload) VALUES (?)"


def sqlite_connect(path: str, synchronous: str, *, create: bool = True) -> sqlite3.Connection:
    db = os.path.join(path, "log.db")
    if create:
        os.makedirs(path, exist_ok=True)
    conn = sqlite3.connect(db, isolation_level=None, timeout=60.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    if create:
        conn.execute("CREATE TABLE IF NOT EXISTS log (lsn INTEGER PRIMARY KEY, payload BLOB)")
    return conn


def sqlite_final_sync(path: str) -> int:
    """The buffered runs' one barrier at the end: fdatasync the WAL file and the database."""
    count = 0
    for name in ("log.db-wal", "log.db"):
        file = os.path.join(path, name)
        if os.path.exists(file):
            fd = os.open(file, os.O_RDONLY)
            try:
                os.fdatasync(fd)
                count += 1
            finally:
                os.close(fd)
    return count


def sqlite_batch(path: str, work: list[list[bytes]]) -> Sample:
    conn = sqlite_connect(path, "OFF")
    try:
        execute, executemany = conn.execute, conn.executemany
        gc.collect()
        t0 = time.perf_counter()
        n = b = 0
        for batch in work:
            execute("BEGIN")
            executemany(_INSERT, zip(batch))
            execute("COMMIT")
            n += len(batch)
            b += sum(map(len, batch))
        t1 = time.perf_counter()
        syncs = sqlite_final_sync(path)
        dt = time.perf_counter() - t0
    finally:
        conn.close()
    return Sample(n, b, dt, syncs, {"sync_s": t0 + dt - t1})


def sqlite_single(path: str, work: list[bytes]) -> Sample:
    conn = sqlite_connect(path, "OFF")
    try:
        execute = conn.execute
        gc.collect()
        t0 = time.perf_counter()
        for p in work:
            execute(_INSERT, (p,))  # autocommit: each record is its own transaction
        t1 = time.perf_counter()
        syncs = sqlite_final_sync(path)
        dt = time.perf_counter() - t0
    finally:
        conn.close()
    return Sample(len(work), sum(map(len, work)), dt, syncs, {"sync_s": t0 + dt - t1})


def sqlite_durable(path: str, payload: bytes, seconds: float, max_n: int) -> Sample:
    conn = sqlite_connect(path, "FULL")
    try:
        execute = conn.execute
        args = (payload,)
        clock = time.perf_counter
        gc.collect()
        t0 = clock()
        deadline = t0 + seconds
        n = 0
        while n < max_n:
            execute(_INSERT, args)
            n += 1
            if clock() >= deadline:
                break
        dt = clock() - t0
    finally:
        conn.close()
    return Sample(n, n * len(payload), dt)


def sqlite_group(path: str, payload: bytes, seconds: float, threads: int) -> Sample:
    sqlite_connect(path, "FULL").close()  # create the database and the table once
    conns: list[sqlite3.Connection] = []
    lock = threading.Lock()

    def make(_i: int) -> Callable[[], object]:
        conn = sqlite_connect(path, "FULL", create=False)  # one connection per thread
        with lock:
            conns.append(conn)
        execute = conn.execute
        args = (payload,)

        def one() -> None:
            # BEGIN IMMEDIATE takes the write lock up front, so SQLite's busy handler (the
            # connection's 60 s timeout) serialises the writers instead of failing them.
            execute("BEGIN IMMEDIATE")
            execute(_INSERT, args)
            execute("COMMIT")

        return one

    try:
        n, dt = run_threads(threads, seconds, make)
    finally:
        for conn in conns:
            conn.close()
    return Sample(n, n * len(payload), dt)


def sqlite_locked_group(path: str, payload: bytes, seconds: float, threads: int) -> Sample:
    """sqlite3 with a Python lock around each transaction: no busy-handler sleeps."""
    sqlite_connect(path, "FULL").close()
    conns: list[sqlite3.Connection] = []
    lock = threading.Lock()
    writer = threading.Lock()

    def make(_i: int) -> Callable[[], object]:
        conn = sqlite_connect(path, "FULL", create=False)
        with lock:
            conns.append(conn)
        execute = conn.execute
        args = (payload,)

        def one() -> None:
            with writer:
                execute("BEGIN IMMEDIATE")
                execute(_INSERT, args)
                execute("COMMIT")

        return one

    try:
        n, dt = run_threads(threads, seconds, make)
    finally:
        for conn in conns:
            conn.close()
    return Sample(n, n * len(payload), dt)


def sqlite_prepare(path: str, size: int, n: int) -> None:
    conn = sqlite_connect(path, "OFF")
    try:
        for batch in batches(size, n, 1000):
            conn.execute("BEGIN")
            conn.executemany(_INSERT, zip(batch))
            conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def sqlite_replay(path: str, size: int, expected: int) -> Sample:
    t0 = time.perf_counter()
    conn = sqlite_connect(path, "OFF", create=False)
    open_s = time.perf_counter() - t0
    try:
        gc.collect()
        t0 = time.perf_counter()
        n = consume(conn.execute("SELECT lsn, payload FROM log ORDER BY lsn"))
        dt = time.perf_counter() - t0
    finally:
        conn.close()
    check_count("sqlite3", n, expected)
    return Sample(n, n * size, dt, extra={"open_ms": open_s * 1e3})


# -- contender: raw os.write + os.fdatasync -----------------------------------------------


def raw_create(path: str) -> int:
    os.makedirs(path, exist_ok=True)
    return os.open(os.path.join(path, "log.raw"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)


def raw_batch(path: str, work: list[list[bytes]]) -> Sample:
    fd = raw_create(path)
    try:
        write = os.write
        gc.collect()
        t0 = time.perf_counter()
        n = b = 0
        for batch in work:
            data = raw_encode(batch)
            write(fd, data)
            n += len(batch)
            b += len(data) - 4 * len(batch)
        t1 = time.perf_counter()
        os.fdatasync(fd)
        dt = time.perf_counter() - t0
    finally:
        os.close(fd)
    return Sample(n, b, dt, 1, {"sync_s": t0 + dt - t1})


def raw_single(path: str, work: list[bytes]) -> Sample:
    fd = raw_create(path)
    try:
        write, pack = os.write, _LEN.pack
        gc.collect()
        t0 = time.perf_counter()
        for p in work:
            write(fd, pack(len(p)) + p)
        t1 = time.perf_counter()
        os.fdatasync(fd)
        dt = time.perf_counter() - t0
    finally:
        os.close(fd)
    return Sample(len(work), sum(map(len, work)), dt, 1, {"sync_s": t0 + dt - t1})


def raw_durable(path: str, payload: bytes, seconds: float, max_n: int) -> Sample:
    fd = raw_create(path)
    try:
        write, fdatasync, pack = os.write, os.fdatasync, _LEN.pack
        clock = time.perf_counter
        gc.collect()
        t0 = clock()
        deadline = t0 + seconds
        n = 0
        while n < max_n:
            write(fd, pack(len(payload)) + payload)
            fdatasync(fd)
            n += 1
            if clock() >= deadline:
                break
        dt = clock() - t0
    finally:
        os.close(fd)
    return Sample(n, n * len(payload), dt, n)


class RawGroupLog:
    """The simplest correct group commit in Python, over one shared fd.

    Writers append under a lock; the first one that needs durability leads an fdatasync that
    covers everything written when it started, followers wait on a condition; a follower not
    covered leads the next one. The same algorithm as segwal's, minus everything else.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.write_lock = threading.Lock()
        self.cond = threading.Condition(threading.Lock())
        self.written = 0
        self.durable = 0
        self.busy = False
        self.syncs = 0

    def append(self, payload: bytes) -> int:
        data = _LEN.pack(len(payload)) + payload
        cond = self.cond
        with self.write_lock:
            os.write(self.fd, data)
            with cond:
                self.written += 1
                seq = self.written
        with cond:
            while self.durable < seq:
                if self.busy:
                    cond.wait()
                    continue
                self.busy = True
                target = self.written
                cond.release()
                try:
                    os.fdatasync(self.fd)
                finally:
                    cond.acquire()
                    self.busy = False
                    self.syncs += 1
                    self.durable = max(self.durable, target)
                    cond.notify_all()
        return seq


def raw_group(path: str, payload: bytes, seconds: float, threads: int) -> Sample:
    fd = raw_create(path)
    try:
        log = RawGroupLog(fd)

        def make(_i: int) -> Callable[[], object]:
            append = log.append
            return lambda: append(payload)

        n, dt = run_threads(threads, seconds, make)
    finally:
        os.close(fd)
    return Sample(n, n * len(payload), dt, log.syncs)


def raw_prepare(path: str, size: int, n: int) -> None:
    fd = raw_create(path)
    try:
        for batch in batches(size, n, 1000):
            os.write(fd, raw_encode(batch))
        os.fdatasync(fd)
    finally:
        os.close(fd)


def raw_records(path: str, chunk: int = 1 << 20) -> Iterator[tuple[int, bytes]]:
    """Parse the length-prefixed file: (lsn, payload) per record, reading 1 MiB at a time."""
    unpack_from = _LEN.unpack_from
    lsn = 0
    carry = b""
    with open(os.path.join(path, "log.raw"), "rb", buffering=0) as f:
        while True:
            data = f.read(chunk)
            if not data:
                break
            buf = carry + data if carry else data
            pos, end = 0, len(buf)
            while pos + 4 <= end:
                (size,) = unpack_from(buf, pos)
                stop = pos + 4 + size
                if stop > end:
                    break
                lsn += 1
                yield (lsn, buf[pos + 4 : stop])
                pos = stop
            carry = buf[pos:]
    if carry:
        raise ValueError(f"raw log ends with {len(carry)} stray bytes")


def raw_replay(path: str, size: int, expected: int) -> Sample:
    gc.collect()
    t0 = time.perf_counter()
    n = consume(raw_records(path))
    dt = time.perf_counter() - t0
    check_count("raw", n, expected)
    return Sample(n, n * size, dt, extra={"open_ms": 0.0})


# -- shared harness -----------------------------------------------------------------------


def consume(records: Iterable[Any]) -> int:
    """The same minimal consumer loop for every contender: take each record, count it.

    Every contender builds a payload ``bytes`` per record (a slice, or SQLite's blob copy)
    and one record object (tuple or Record); the loop itself is kept as cheap as Python
    allows so that the numbers show the readers, not the consumer.
    """
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

    pool_ = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in pool_:
        t.start()
    gc.collect()
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait()
    t0 = time.perf_counter()
    if not errors:
        time.sleep(seconds)
    running[0] = False
    for t in pool_:
        t.join()
    dt = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} thread(s) failed") from errors[0]
    return sum(counts), dt


# -- cases --------------------------------------------------------------------------------


def size_label(size: int) -> str:
    return f"{size // KiB}KiB" if size % KiB == 0 else f"{size}B"


def build_cases(quick: bool) -> list[Case]:
    if quick:
        batch_n = {100: 20_000, KiB: 5_000}
        single_n = {100: 3_000, KiB: 2_000}
        replay_n = {100: 20_000, KiB: 5_000}
        durable_s, durable_max, group_s = 0.2, 2_000, 0.2
    else:
        batch_n = {100: 200_000, KiB: 50_000}
        single_n = {100: 30_000, KiB: 20_000}
        replay_n = {100: 200_000, KiB: 50_000}
        durable_s, durable_max, group_s = 1.5, 20_000, 1.0
    cases: list[Case] = []
    for size in (100, KiB):
        cases.append(
            Case(
                f"batch-{size_label(size)}",
                "batch",
                size,
                records=batch_n[size],
                batch=1000,
                description=f"append_batch of 1000 x {size} B, sync=never, one sync at the end",
            )
        )
    for size in (100, KiB):
        cases.append(
            Case(
                f"single-{size_label(size)}",
                "single",
                size,
                records=single_n[size],
                description=f"append loop of {size} B, sync=never, one sync at the end",
            )
        )
    cases.append(
        Case(
            "durable-100B",
            "durable",
            100,
            seconds=durable_s,
            records=durable_max,
            description=f"durable append of 100 B, one thread, {durable_s} s "
            f"or {durable_max} appends",
        )
    )
    for threads in (1, 4, 8, 16, 64):
        cases.append(
            Case(
                f"group-{threads}t",
                "group",
                100,
                seconds=group_s,
                threads=threads,
                description=f"{threads} threads x durable append of 100 B for {group_s} s",
            )
        )
    for size in (100, KiB):
        cases.append(
            Case(
                f"replay-{size_label(size)}",
                "replay",
                size,
                records=replay_n[size],
                description=f"full replay of {replay_n[size]} records of {size} B "
                "(warm page cache)",
            )
        )
    return cases


RUNNERS: dict[str, dict[str, Callable[..., Sample]]] = {
    "segwal": {
        "batch": segwal_batch,
        "single": segwal_single,
        "durable": segwal_durable,
        "group": segwal_group,
        "replay": segwal_replay,
    },
    "sqlite3": {
        "batch": sqlite_batch,
        "single": sqlite_single,
        "durable": sqlite_durable,
        "group": sqlite_group,
        "replay": sqlite_replay,
    },
    "raw": {
        "batch": raw_batch,
        "single": raw_single,
        "durable": raw_durable,
        "group": raw_group,
        "replay": raw_replay,
    },
    "sqlite3+lock": {"group": sqlite_locked_group},
}
PREPARE: dict[str, Callable[[str, int, int], None]] = {
    "segwal": segwal_prepare,
    "sqlite3": sqlite_prepare,
    "raw": raw_prepare,
}


class Runner:
    """Runs cases in fresh directories under ``base``; replay datasets are built once."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.counter = 0
        self.prepared: dict[tuple[str, str], str] = {}
        self.inputs: dict[str, Any] = {}

    def fresh(self, contender: str, case: Case) -> str:
        self.counter += 1
        return os.path.join(self.base, f"{self.counter:04d}-{case.name}-{contender}")

    def work(self, case: Case) -> Any:
        if case.name not in self.inputs:
            if case.kind == "batch":
                self.inputs[case.name] = batches(case.record_size, case.records, case.batch)
            elif case.kind == "single":
                self.inputs[case.name] = sequence(case.record_size, case.records)
        return self.inputs.get(case.name)

    def run(self, contender: str, case: Case) -> Sample:
        fn = RUNNERS[contender][case.kind]
        if case.kind == "replay":
            key = (contender, case.name)
            if key not in self.prepared:
                path = os.path.join(self.base, f"replay-{case.name}-{contender}")
                PREPARE[contender](path, case.record_size, case.records)
                self.prepared[key] = path
            return fn(self.prepared[key], case.record_size, case.records)
        path = self.fresh(contender, case)
        try:
            if case.kind in ("batch", "single"):
                return fn(path, self.work(case))
            payload = pool(case.record_size)[0]
            if case.kind == "durable":
                return fn(path, payload, case.seconds, case.records)
            return fn(path, payload, case.seconds, case.threads)
        finally:
            shutil.rmtree(path, ignore_errors=True)


# -- machine and file system --------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def filesystem(path: str) -> dict[str, str]:
    """The file system ``path`` is on: /proc/mounts (longest mount prefix) and stat -f."""
    real = os.path.realpath(path)
    info = {"fstype": "unknown", "device": "?", "mountpoint": "?", "statfs": "?"}
    best = -1
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                device, mnt, fstype = (p.replace("\\040", " ") for p in parts[:3])
                inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) > best:
                    best = len(mnt)
                    info.update(fstype=fstype, device=device, mountpoint=mnt)
    except OSError:
        pass
    try:
        out = subprocess.run(
            ["stat", "-f", "-c", "%T", real], capture_output=True, text=True, timeout=10
        )
        if out.returncode == 0:
            info["statfs"] = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    dev = os.path.basename(info["device"])
    rot = Path(f"/sys/block/{dev}/queue/rotational")
    if rot.exists():
        info["rotational"] = rot.read_text().strip()
    return info


def in_memory(fs: dict[str, str]) -> bool:
    return fs["fstype"] in ("tmpfs", "ramfs") or fs["statfs"] in ("tmpfs", "ramfs")


def machine(path: str) -> dict[str, Any]:
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count() or 0
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    return {
        "nproc": affinity,
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_impl": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "segwal": getattr(segwal, "__version__", "?"),
        "loadavg": [round(x, 2) for x in load],
        "dir": path,
        "filesystem": filesystem(path),
    }


# -- reporting ----------------------------------------------------------------------------


def human(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def summarize(case: Case, contender: str, samples: list[Sample]) -> dict[str, Any]:
    rates = [s.rps for s in samples]
    med = statistics.median(rates)
    row: dict[str, Any] = {
        "workload": case.name,
        "contender": contender,
        "median_rps": med,
        "best_rps": max(rates),
        "median_mbps": statistics.median([s.mbps for s in samples]),
        "spread_pct": (max(rates) - min(rates)) / med * 100 if med else 0.0,
        "samples": [asdict(s) | {"rps": s.rps, "mbps": s.mbps} for s in samples],
    }
    syncs = [s.syncs for s in samples if s.syncs]
    if syncs and case.kind in ("durable", "group"):
        row["records_per_sync"] = statistics.median(
            [s.records / s.syncs for s in samples if s.syncs]
        )
    if all("sync_s" in s.extra for s in samples):
        row["sync_pct"] = statistics.median(
            [s.extra["sync_s"] / s.seconds * 100 for s in samples if s.seconds]
        )
        row["median_rps_before_sync"] = statistics.median(
            [s.records / (s.seconds - s.extra["sync_s"]) for s in samples]
        )
    opens = [s.extra["open_ms"] for s in samples if "open_ms" in s.extra]
    if opens:
        row["open_ms"] = statistics.median(opens)
    return row


def notes(row: dict[str, Any]) -> str:
    parts = []
    if "records_per_sync" in row:
        parts.append(f"{row['records_per_sync']:.1f} rec/fdatasync")
    if "sync_pct" in row:
        parts.append(
            f"final sync {row['sync_pct']:.0f}% of time; "
            f"{human(row['median_rps_before_sync'])}/s before it"
        )
    if row.get("open_ms"):
        parts.append(f"open {row['open_ms']:.0f} ms")
    if row["spread_pct"] > 25:
        parts.append("noisy")
    return ", ".join(parts)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| workload | contender | records/s (median) | best | MB/s | x segwal | spread | notes |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        ratio = row.get("ratio")
        lines.append(
            f"| {row['workload']} | {row['contender']} | {human(row['median_rps'])} "
            f"| {human(row['best_rps'])} | {row['median_mbps']:.1f} "
            f"| {'-' if ratio is None else f'{ratio:.2f}x'} "
            f"| {row['spread_pct']:.0f}% | {notes(row)} |"
        )
    return "\n".join(lines)


def targets(rows: list[dict[str, Any]], samples: dict[tuple[str, str], list[Sample]]) -> list[str]:
    """The reference targets for segwal, when the run covered them."""
    by = {(r["workload"], r["contender"]): r["median_rps"] for r in rows}
    rowmap = {(r["workload"], r["contender"]): r for r in rows}
    out = []
    for name, goal in (("batch-100B", 3e6), ("replay-100B", 3e6)):
        got = by.get((name, "segwal"))
        if got is not None:
            verdict = "met" if got >= goal else "NOT met"
            line = f"- {name}: segwal {human(got)} records/s, target >= {human(goal)}: {verdict}"
            before = rowmap[(name, "segwal")].get("median_rps_before_sync")
            if before:
                line += f" ({human(before)}/s before the final sync, which the raw file pays too)"
            out.append(line)
    base = "durable-100B" if ("durable-100B", "segwal") in samples else "group-1t"
    single = by.get((base, "segwal"))
    group8 = by.get(("group-8t", "segwal"))
    if single and group8:
        # Paired within each repetition, like "x segwal": the disk's speed changes between
        # repetitions on a shared machine, much less within one.
        pairs = [
            g.rps / d.rps
            for g, d in zip(samples[("group-8t", "segwal")], samples[(base, "segwal")], strict=True)
            if d.rps
        ]
        speedup = statistics.median(pairs) if pairs else group8 / single
        verdict = "met" if speedup >= 3 else "NOT met"
        line = (
            f"- group-8t: segwal {human(group8)} vs single-thread durable ({base}) "
            f"{human(single)} records/s; paired speedup {speedup:.2f}x "
            f"(per repetition {', '.join(f'{x:.1f}' for x in pairs)}), target >= 3x: {verdict}"
        )
        per_sync = rowmap[("group-8t", "segwal")].get("records_per_sync")
        if per_sync:
            line += f" ({per_sync:.1f} records per fdatasync, the load-independent measure)"
        out.append(line)
    return out


# -- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="segwal vs sqlite3 (WAL) vs raw os.write+fdatasync, medians of N runs."
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, finishes in < 20 s")
    parser.add_argument(
        "--only", metavar="PATTERN", help="regex on workload names, e.g. 'batch|replay-100B'"
    )
    parser.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"comma-separated subset of {','.join(CONTENDERS)} (segwal is always kept)",
    )
    parser.add_argument("--repeat", type=int, default=5, metavar="N", help="repetitions (5)")
    parser.add_argument(
        "--dir", metavar="DIR", help="where to write (default: a temp dir under /var/tmp)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark files")
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cases = build_cases(args.quick)
    if args.only:
        pattern = re.compile(args.only)
        cases = [c for c in cases if pattern.search(c.name)]
    if args.list or not cases:
        for c in build_cases(args.quick):
            print(f"{c.name:14} {c.description}")
        return 0 if args.list else 2
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = set(contenders) - set(CONTENDERS)
    if unknown:
        print(f"unknown contender(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    if "segwal" not in contenders:
        contenders.insert(0, "segwal")

    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
        parent = args.dir
    else:
        parent = "/var/tmp" if os.path.isdir("/var/tmp") else tempfile.gettempdir()
    base = tempfile.mkdtemp(prefix="segwal-bench-", dir=parent)

    info = machine(base)
    fs = info["filesystem"]
    print("# segwal core benchmark\n")
    print(
        f"- machine: {info['nproc']} CPUs usable ({info['cpu_count']} online), "
        f"{info['cpu_model']}, Linux {info['kernel']}, load average "
        f"{' '.join(map(str, info['loadavg']))}"
    )
    print(
        f"- software: {info['python_impl']} {info['python']}, SQLite {info['sqlite']}, "
        f"segwal {info['segwal']}"
    )
    rot = f", rotational={fs['rotational']}" if "rotational" in fs else ""
    print(
        f"- directory: {base} on {fs['fstype']} ({fs['device']} mounted at "
        f"{fs['mountpoint']}; stat -f: {fs['statfs']}{rot})"
    )
    print(
        f"- runs: median of {args.repeat} interleaved repetitions"
        f"{' (quick sizes)' if args.quick else ''}; MB/s counts payload bytes (1 MB = 10^6 B)"
    )
    if in_memory(fs):
        warning = (
            f"WARNING: {base} is on {fs['fstype']}: fdatasync there is free and nothing is "
            "durable, so the durable and group-commit numbers mean nothing. Use --dir on a "
            "real disk (e.g. /var/tmp)."
        )
        print(f"\n**{warning}**")
        print(warning, file=sys.stderr)
    print()
    sys.stdout.flush()

    runner = Runner(base)
    samples: dict[tuple[str, str], list[Sample]] = {}
    started = time.perf_counter()
    try:
        for rep in range(args.repeat):
            shift = rep % len(contenders)
            order = contenders[shift:] + contenders[:shift]
            for case in cases:
                for contender in order:
                    if case.kind not in APPLIES.get(contender, {case.kind}):
                        continue
                    s = runner.run(contender, case)
                    samples.setdefault((case.name, contender), []).append(s)
                    print(
                        f"[{rep + 1}/{args.repeat}] {case.name:13} {contender:8} "
                        f"{human(s.rps):>8} rec/s {s.mbps:8.1f} MB/s",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    elapsed = time.perf_counter() - started

    rows = []
    for case in cases:
        group = [
            summarize(case, c, samples[(case.name, c)])
            for c in contenders
            if (case.name, c) in samples
        ]
        ref = [x.rps for x in samples[(case.name, contenders[0])]]
        for row in group:
            # Paired: the ratio within each repetition, then the median of those ratios, so
            # that a repetition slowed down for everyone does not move the ratio.
            mine = [x.rps for x in samples[(case.name, row["contender"])]]
            pairs = [m / r for m, r in zip(mine, ref, strict=True) if r]
            row["ratio"] = statistics.median(pairs) if pairs else None
            row["description"] = case.description
        rows.extend(group)

    print(table(rows))
    print(
        "\nrecords/s and MB/s: medians over the repetitions; best: the fastest repetition. "
        "x segwal: the median over repetitions of (contender records/s / segwal records/s "
        "in the same repetition); above 1 the contender is faster. spread: (max - min) / "
        "median of the repetitions."
    )
    goals = targets(rows, samples)
    if goals:
        print("\nTargets (2-core reference machine):\n")
        print("\n".join(goals))
    try:
        load_end = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load_end = [0.0, 0.0, 0.0]
    info["loadavg_end"] = load_end
    print(f"\nTotal time {elapsed:.0f} s; load average at the end {' '.join(map(str, load_end))}.")
    busiest = max(info["loadavg"][0], load_end[0])
    if busiest > info["nproc"]:
        print(
            f"\n**WARNING: load average {busiest} exceeds the {info['nproc']} usable CPUs: "
            "other processes competed for the CPUs (and probably the disk) during this run; "
            "trust ratios with a small spread only, and rerun when the machine is idle.**"
        )

    if args.json:
        doc = {
            "machine": info,
            "args": {k: v for k, v in vars(args).items() if k != "json"},
            "cases": [asdict(c) for c in cases],
            "results": rows,
            "elapsed_s": elapsed,
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
