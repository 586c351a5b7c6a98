"""The read workloads: full replays, random point reads and opens, and the logs they read.

Every contender's replay feeds the same minimal consumer loop (``consume``) and its point
reads the same loop of ``get`` calls; the appending workloads are in ``workloads``. Work
that is not being measured (building the logs, warm-up reads, closing) stays outside the clock.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable, Sequence
from itertools import chain
from typing import TYPE_CHECKING

import segwal
from segwal.bench.peers import Reader, SegwalReader
from segwal.bench.workloads import SEGMENT_RECORDS, Sample, pool

if TYPE_CHECKING:
    from segwal.bench.peers import Peer


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


def consume(records: Iterable[object]) -> int:
    """The same minimal consumer loop for every contender: take each record, count it."""
    n = 0
    for _rec in records:
        n += 1
    return n


def check_count(who: str, n: int, expected: int) -> None:
    if n != expected:
        raise RuntimeError(f"{who} replayed {n} records, expected {expected}")
