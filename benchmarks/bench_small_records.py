"""Single small appends in compressed and encrypted logs, and what a trained zstd
dictionary would change (the figures in benchmarks/README.md).

    python benchmarks/bench_small_records.py appends   # append() one record at a time
    python benchmarks/bench_small_records.py dict      # per-record zstd, with and without

``appends``: 20,000 JSON-like records (``segwal.bench.codecs.jsonish``) of 100 B and 1 KiB,
each its own ``append`` with ``sync="never"`` and one ``sync()`` at the end, for plain,
zstd, AES-256-GCM and zstd + AES-256-GCM logs; rates relative to plain in the same run
(median of 5 interleaved runs) and the ratio payload bytes / bytes on disk.

``dict``: one record per zstd frame (as a single append is stored), level 3, without a
dictionary and with a 16 KiB dictionary trained (``zstd.train_dict``) on 4,000 other
records of the same generator; what segwal would keep under its rule (at least 129 plain
bytes tried, kept when an eighth and 64 bytes are saved) and the ratio on disk with the
40-byte frame head and 4-byte plain size. segwal does not implement dictionaries.
"""

from __future__ import annotations

import gc
import os
import random
import shutil
import statistics
import struct
import sys
import tempfile
import time
from typing import Any

import segwal
from segwal.bench.codecs import jsonish, payloads

KEK = bytes(range(32))
ROWS: dict[str, dict[str, Any]] = {
    "none": {},
    "zstd": {"compression": "zstd"},
    "aes-gcm": {"encryption_key": KEK},
    "zstd+aes-gcm": {"compression": "zstd", "encryption_key": KEK},
}
HEAD = 40  # frame head
MIN_TRIED = 128  # bodies of this many bytes or fewer are never compressed


def _appends(size: int, n: int, options: dict[str, Any], data: list[bytes]) -> tuple[float, float]:
    path = tempfile.mkdtemp(prefix="small-", dir="/var/tmp")
    try:
        wal = segwal.open(path, sync="never", **options)
        gc.collect()
        t0 = time.perf_counter()
        for payload in data:
            wal.append(payload)
        wal.sync()
        rate = n / (time.perf_counter() - t0)
        wal.close()
        disk = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if ".wal" in f)
        return rate, n * size / disk
    finally:
        shutil.rmtree(path, ignore_errors=True)


def appends() -> None:
    n = 20_000
    for size in (100, 1024):
        data = payloads("jsonish", size, n)
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in ROWS}
        for r in range(5):
            names = list(ROWS)[r % len(ROWS) :] + list(ROWS)[: r % len(ROWS)]
            for name in names:
                runs[name].append(_appends(size, n, ROWS[name], data))
        plain = [x[0] for x in runs["none"]]
        for name, got in runs.items():
            rel = statistics.median(a[0] / b for a, b in zip(got, plain, strict=True))
            rate = statistics.median(x[0] for x in got)
            print(
                f"single {size:4} B {name:13} {rate:9,.0f} rec/s {rel:5.2f}x plain "
                f"ratio {got[0][1]:.2f}"
            )


def dictionaries() -> None:
    if sys.version_info >= (3, 14):
        from compression import zstd
    else:
        from backports import zstd
    for size in (100, 256, 1024):
        rng = random.Random(7 + size)
        train = [jsonish(i, size, rng) for i in range(4000)]
        test = [jsonish(10_000 + i, size, rng) for i in range(2000)]
        trained = zstd.train_dict(train, 16 * 1024)
        options: tuple[tuple[str, dict[str, Any]], ...] = (
            ("no dictionary", {}),
            ("16 KiB dictionary", {"zstd_dict": trained}),
        )
        for label, extra in options:
            compressor = zstd.ZstdCompressor(3, **extra)
            bodies = [struct.pack("<I", len(p)) + p for p in test]
            t0 = time.perf_counter()
            packed = [compressor.compress(b, compressor.FLUSH_FRAME) for b in bodies]
            per = (time.perf_counter() - t0) / len(bodies)
            kept = stored = 0
            for body, out in zip(bodies, packed, strict=True):
                saved = len(body) - len(out)
                if len(body) > MIN_TRIED and saved >= 64 and saved * 8 >= len(body):
                    kept += 1
                    stored += HEAD + 4 + len(out)
                else:
                    stored += HEAD + len(body)
            zstd_ratio = sum(map(len, bodies)) / sum(map(len, packed))
            disk = sum(HEAD + len(b) for b in bodies) / stored
            print(
                f"{size:5} B {label:18} zstd alone {zstd_ratio:4.2f}x, kept compressed "
                f"{kept / len(bodies):4.0%}, frames on disk {disk:4.2f}x smaller, "
                f"{per * 1e6:5.1f} us a record"
            )


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "appends"
    if what not in ("appends", "dict"):
        raise SystemExit(__doc__)
    appends() if what == "appends" else dictionaries()
