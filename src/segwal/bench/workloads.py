"""The append workloads' timed loops, the samples they give and the payloads they write.

Every contender runs the same loop (a single-record append loop, a batch loop, N threads
appending, a replay that counts records, random point reads); only the calls inside the
loop differ, and those come from the contender's writer and reader (see ``peers``). Work
that is not being measured (creating directories, opening, building payload lists,
closing, deleting) stays outside the clock. The rows are listed in ``cases``; the replay,
read and open loops are in ``readloads``.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from segwal.bench.peers import Peer

_POOL_SIZE = 1024  # distinct payloads per record size; records cycle through them
SEGMENT_RECORDS = 50  # readsegs: records per batch (one frame each)


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


# -- helpers -----------------------------------------------------------------------------


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
