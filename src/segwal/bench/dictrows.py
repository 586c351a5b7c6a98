"""``segwal bench --codecs``, single appends: what a trained zstd dictionary saves on one
small record per frame, against plain segwal and zstd without a dictionary in the same run.

Rows: plain, zstd and zstd + a 16 KiB dictionary x JSON-like records (``codecs.jsonish``)
of 100 B, 256 B and 1 KiB, one record per ``append`` (so one frame each), ``sync="never"``
and one ``sync()`` at the end, then replayed in full (warm cache). The dictionary is trained
on 2,000 other records of the same generator (another seed), as a user would train on
yesterday's records. Reported like the batch rows: rates, the rate relative to plain segwal
on the same records in the same run (the median of interleaved repetitions), and the ratio
of payload bytes to bytes on disk (headers, frame heads and seals included: a single record's
40-byte frame head is a floor no codec removes).
"""

from __future__ import annotations

import gc
import os
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Final

import segwal
from segwal.bench.codecs import jsonish

SIZES: Final = (100, 256, 1024)
DICT_BYTES: Final = 16384
ROWS: Final = ("none", "zstd", "zstd+dict")


@dataclass
class SingleResult:
    codec: str
    size: int
    append_rps: float
    replay_rps: float
    ratio: float
    append_vs_plain: float = 1.0
    replay_vs_plain: float = 1.0


def _records(size: int, n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed + size)
    return [jsonish(i, size, rng) for i in range(n)]


def _one(base: str, options: dict[str, Any], data: list[bytes]) -> tuple[float, float, int]:
    path = tempfile.mkdtemp(prefix="dict-", dir=base)
    try:
        wal = segwal.open(path, sync="never", **options)
        append = wal.append
        gc.collect()
        t0 = time.perf_counter()
        for record in data:
            append(record)
        wal.sync()
        appended = time.perf_counter() - t0
        wal.close()
        disk = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if ".wal" in f)
        with segwal.open(path, readonly=True) as reader:
            gc.collect()
            t0 = time.perf_counter()
            count = sum(1 for _ in reader.replay())
            replayed = time.perf_counter() - t0
        if count != len(data):
            raise RuntimeError(f"replay gave {count} records, not {len(data)}")
        return len(data) / appended, len(data) / replayed, disk
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_single(base: str, n: int, repeat: int) -> list[SingleResult]:
    """Every single-append row; needs zstd (``segwal[zstd]``)."""
    results: list[SingleResult] = []
    for size in SIZES:
        data = _records(size, n, 20261206)
        trained = segwal.train_dictionary(_records(size, 2000, 1), DICT_BYTES)
        options: dict[str, dict[str, Any]] = {
            "none": {},
            "zstd": {"compression": "zstd"},
            "zstd+dict": {"compression": "zstd", "compression_dictionary": trained},
        }
        runs: dict[str, list[tuple[float, float, int]]] = {c: [] for c in ROWS}
        for r in range(repeat):
            turn = r % len(ROWS)
            for codec in ROWS[turn:] + ROWS[:turn]:
                runs[codec].append(_one(base, options[codec], data))
        plain_append = statistics.median(x[0] for x in runs["none"])
        plain_replay = statistics.median(x[1] for x in runs["none"])
        for codec in ROWS:
            append = statistics.median(x[0] for x in runs[codec])
            replay = statistics.median(x[1] for x in runs[codec])
            disk = statistics.median(x[2] for x in runs[codec])
            results.append(
                SingleResult(
                    codec,
                    size,
                    append,
                    replay,
                    n * size / disk,
                    append / plain_append,
                    replay / plain_replay,
                )
            )
    return results


def render_single(results: list[SingleResult], repeat: int) -> str:
    lines = [
        "## Single small appends with a trained dictionary: one record per append, sync once",
        "",
        f"JSON-like records, median of {repeat} interleaved runs; a {DICT_BYTES}-byte zstd "
        "dictionary trained on 2,000 other records. ratio = payload bytes / bytes on disk "
        "(each record is one frame with a 40-byte head).",
        "",
        "| codec | size | append rec/s | vs plain | replay rec/s | vs plain | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.codec} | {r.size} B | {r.append_rps:,.0f} | {r.append_vs_plain:.2f}x | "
            f"{r.replay_rps:,.0f} | {r.replay_vs_plain:.2f}x | {r.ratio:.2f} |"
        )
    return "\n".join(lines) + "\n"
