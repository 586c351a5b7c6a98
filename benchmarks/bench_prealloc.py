#!/usr/bin/env python3
"""Does preallocating a segment, or O_DIRECT, make a durable append cheaper here?

Each variant appends 100-byte records one at a time and makes each durable before the
next, as segwal's sync="always" does for a single thread:

- append:      pwrite at the end of a growing file + fdatasync (what segwal does today)
- zeroed:      overwrite a file whose blocks were written with zeros and synced first
               (the size and the extent map never change, so fdatasync flushes data only)
- fallocate:   overwrite space reserved with posix_fallocate (unwritten extents: each
               first write into a block still changes metadata)
- o_dsync:     the append variant with O_DSYNC instead of a separate fdatasync call
- o_direct:    O_DIRECT|O_DSYNC into a zeroed file, rewriting the 4 KiB block that holds
               the tail (O_DIRECT needs aligned buffers, offsets and sizes)

Variants run interleaved, ``--repeat`` times, in rotating order; the table shows medians
and the ratio to ``append``.

    python benchmarks/bench_prealloc.py [--ops 1000] [--repeat 5] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import mmap
import os
import statistics
import tempfile
import time
from collections.abc import Callable

RECORD = 100
BLOCK = 4096


def _zeroed(path: str, size: int) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        chunk = bytes(1 << 20)
        for offset in range(0, size, len(chunk)):
            os.pwrite(fd, chunk[: min(len(chunk), size - offset)], offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def _timed_writes(fd: int, ops: int, *, sync: bool) -> float:
    """``ops`` records written one after another, each fdatasynced before the next."""
    record = os.urandom(RECORD)
    try:
        t0 = time.perf_counter()
        for i in range(ops):
            os.pwrite(fd, record, i * RECORD)
            if sync:
                os.fdatasync(fd)
        return time.perf_counter() - t0
    finally:
        os.close(fd)


def append(path: str, ops: int) -> float:
    return _timed_writes(os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644), ops, sync=True)


def zeroed(path: str, ops: int) -> float:
    _zeroed(path, ops * RECORD + BLOCK)
    return _timed_writes(os.open(path, os.O_RDWR), ops, sync=True)


def fallocate(path: str, ops: int) -> float:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.posix_fallocate(fd, 0, ops * RECORD + BLOCK)
        os.fsync(fd)
    except OSError:
        os.close(fd)
        raise
    return _timed_writes(fd, ops, sync=True)


def o_dsync(path: str, ops: int) -> float:
    flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_DSYNC
    return _timed_writes(os.open(path, flags, 0o644), ops, sync=False)


def o_direct(path: str, ops: int) -> float:
    _zeroed(path, ops * RECORD + 2 * BLOCK)
    fd = os.open(path, os.O_RDWR | os.O_DIRECT | os.O_DSYNC)
    buf = mmap.mmap(-1, 2 * BLOCK)  # page-aligned, as O_DIRECT requires
    record = os.urandom(RECORD)
    try:
        t0 = time.perf_counter()
        for i in range(ops):
            start = i * RECORD
            block = start - start % BLOCK
            at = start - block
            buf[at : at + RECORD] = record
            end = at + RECORD
            size = BLOCK if end <= BLOCK else 2 * BLOCK
            os.pwrite(fd, memoryview(buf)[:size], block)
            if end > BLOCK:  # the tail moved into the next block: slide the window
                buf[:BLOCK] = buf[BLOCK:]
                buf[BLOCK:] = bytes(BLOCK)
        return time.perf_counter() - t0
    finally:
        buf.close()
        os.close(fd)


VARIANTS: dict[str, Callable[[str, int], float]] = {
    "append": append,
    "zeroed": zeroed,
    "fallocate": fallocate,
    "o_dsync": o_dsync,
    "o_direct": o_direct,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    names = list(VARIANTS)
    times: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="segwal-prealloc-") as root:
        for rep in range(args.repeat):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for name in order:
                path = os.path.join(root, name)
                try:
                    times[name].append(args.ops / VARIANTS[name](path, args.ops))
                except OSError as exc:  # O_DIRECT is refused by some file systems (tmpfs)
                    print(f"{name}: {exc}")
                    times[name].append(0.0)
                os.unlink(path)
    base = statistics.median(times["append"])
    print(f"| variant | durable appends/s (median of {args.repeat}) | vs append |")
    print("|---|---:|---:|")
    for name in names:
        rate = statistics.median(times[name])
        ratio = f"{rate / base:.2f}x" if base and rate else "-"
        print(f"| {name} | {rate:,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
