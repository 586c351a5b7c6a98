"""``segwal bench --codecs``: what compression and encryption cost and save, against plain
segwal in the same run.

Rows: zstd, lz4, AES-256-GCM, zstd + AES-256-GCM, and zstd and lz4 "pipelined" (compressed
on ``compression_threads`` worker threads, off the appending thread) (and plain segwal,
write-through, the baseline) x
100 B and 1 KiB records x JSON-like
(``jsonish``, a generator kept here so every run uses the same text) and random records,
appended in batches of 64 with ``sync="never"`` and one ``sync()`` at the end (like the
buffered batch rows), then replayed in full (warm cache). Each row reports the append and
replay rates, the bytes on disk against the payload bytes (the compression ratio), and
the append and replay rates relative to plain segwal on the same records in the same run
(the median of interleaved repetitions), and the append's CPU time (every thread of the
process, so the pipelined rows' workers count) relative to plain's: on a machine shared with
other work the wall-clock rates include waiting for a core, the CPU time does not.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import segwal

BATCH: Final = 64
PIPELINE_THREADS: Final = 2  # the "pipelined" rows' compression_threads
SIZES: Final = (100, 1024)
# The rows: name, and the options of segwal.open that write (and read) that way.
_KEK: Final = bytes(range(32))  # a fixed key-encryption key: a benchmark protects nothing
CODECS: Final[dict[str, dict[str, Any]]] = {
    "none": {},
    "zstd": {"compression": "zstd"},
    "lz4": {"compression": "lz4"},
    "aes-gcm": {"encryption_key": _KEK},
    "zstd+aes-gcm": {"compression": "zstd", "encryption_key": _KEK},
    # Pipelined: compressed on worker threads, off the appending thread (log/pipeline.py).
    "zstd pipelined": {"compression": "zstd", "compression_threads": PIPELINE_THREADS},
    "lz4 pipelined": {"compression": "lz4", "compression_threads": PIPELINE_THREADS},
}
_WORDS: Final = [
    *("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"),
    *("juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo"),
    *("sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu"),
]


def jsonish(i: int, size: int, rng: random.Random) -> bytes:
    """A JSON object of about ``size`` bytes, like an event log's: repeated keys, small
    integers, words, a timestamp; ``size`` exactly (padded or cut inside a string)."""
    parts = [
        f'{{"id": {i}, "ts": "2026-12-06T04:{i % 60:02d}:{(i * 7) % 60:02d}.{i % 1000:03d}Z"',
        f'"user": "user-{rng.randrange(5000)}", "event": "{rng.choice(_WORDS)}"',
        f'"score": {rng.randrange(1000)}, "ok": {"true" if i % 3 else "false"}',
        '"text": "' + " ".join(rng.choice(_WORDS) for _ in range(size // 6)),
    ]
    body = ", ".join(parts).encode()[: size - 2] + b'"}'
    return body.ljust(size, b" ")


def payloads(kind: str, size: int, n: int) -> list[bytes]:
    """``n`` records of ``size`` bytes: JSON-like, or random (incompressible)."""
    rng = random.Random(20261206 + size)
    if kind == "random":
        return [rng.randbytes(size) for _ in range(n)]
    return [jsonish(i, size, rng) for i in range(n)]


@dataclass
class Result:
    codec: str
    kind: str
    size: int
    append_rps: float
    replay_rps: float
    ratio: float  # payload bytes / bytes on disk
    append_vs_plain: float = 1.0
    replay_vs_plain: float = 1.0
    cpu_vs_plain: float = 1.0  # plain's append CPU time / this row's (1/x: x times the CPU)


def _disk_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if ".wal" in f)


def _one(base: str, codec: str, work: list[list[bytes]]) -> tuple[float, float, int, float]:
    path = tempfile.mkdtemp(prefix="codec-", dir=base)
    n = sum(map(len, work))
    options = CODECS[codec]
    key = {"encryption_key": options["encryption_key"]} if "encryption_key" in options else {}
    try:
        wal = segwal.open(path, sync="never", **options)
        append: Callable[[list[bytes]], object] = wal.append_batch
        gc.collect()
        c0 = time.process_time()
        t0 = time.perf_counter()
        for batch in work:
            append(batch)
        wal.sync()
        appended = time.perf_counter() - t0
        cpu = time.process_time() - c0
        wal.close()
        disk = _disk_bytes(path)
        with segwal.open(path, sync="never", readonly=True, **key) as reader:
            gc.collect()
            t0 = time.perf_counter()
            count = sum(1 for _ in reader.replay())
            replayed = time.perf_counter() - t0
        if count != n:
            raise RuntimeError(f"replay gave {count} records, not {n}")
        return n / appended, n / replayed, disk, cpu
    finally:
        shutil.rmtree(path, ignore_errors=True)


_LIBRARIES: Final = {"zstd": ("compression.zstd", "backports.zstd"), "lz4": ("lz4.block",)}


def _found(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package is missing
        return False


def available(note: Callable[[str], None]) -> tuple[str, ...]:
    """The rows whose libraries are installed; a one-line note for each one skipped."""
    names = []
    for name, options in CODECS.items():
        missing = []
        codec = options.get("compression")
        if codec is not None and not any(map(_found, _LIBRARIES[codec])):
            missing.append(codec)
        if "encryption_key" in options and not _found("cryptography"):
            missing.append("crypto")
        if missing:
            note(f"codecs: {name} skipped (pip install 'segwal[{','.join(missing)}]')")
        else:
            names.append(name)
    return tuple(names)


def run(
    base: str,
    records: dict[int, int],
    repeat: int,
    note: Callable[[str], None],
    codecs: tuple[str, ...] = tuple(CODECS),
) -> list[Result]:
    """Every row, repetitions interleaved over the codecs so drift hits them alike
    (``codecs``: names of ``CODECS``; "none", the baseline, is always run)."""
    codecs = ("none", *(c for c in codecs if c != "none"))
    results: list[Result] = []
    for size, n in records.items():
        for kind in ("jsonish", "random"):
            data = payloads(kind, size, n)
            work = [data[i : i + BATCH] for i in range(0, n, BATCH)]
            names = list(codecs)
            runs: dict[str, list[tuple[float, float, int, float]]] = {c: [] for c in names}
            for r in range(repeat):
                turn = r % len(names)
                for codec in names[turn:] + names[:turn]:
                    runs[codec].append(_one(base, codec, work))
            plain_append = statistics.median(x[0] for x in runs["none"])
            plain_replay = statistics.median(x[1] for x in runs["none"])
            plain_cpu = statistics.median(x[3] for x in runs["none"])
            for codec in names:
                append = statistics.median(x[0] for x in runs[codec])
                replay = statistics.median(x[1] for x in runs[codec])
                disk = statistics.median(x[2] for x in runs[codec])
                cpu = statistics.median(x[3] for x in runs[codec])
                results.append(
                    Result(
                        codec,
                        kind,
                        size,
                        append,
                        replay,
                        n * size / disk,
                        append / plain_append,
                        replay / plain_replay,
                        plain_cpu / cpu if cpu > 0 else 0.0,
                    )
                )
            note(f"codecs: {size} B {kind} done")
    return results


def render(results: list[Result], repeat: int) -> str:
    lines = [
        "## Compression and encryption (format v2): batches of 64, sync once at the end",
        "",
        f"Median of {repeat} interleaved runs. ratio = payload bytes / bytes on disk "
        "(headers, frames and seals included); 'vs plain' = rate / plain segwal's rate on "
        "the same records in the same run. Rows marked 'pipelined' compress on "
        f"compression_threads={PIPELINE_THREADS} worker threads off the appending thread "
        "(an append returns once queued; the promise of buffer_bytes, see DURABILITY.md); "
        "the other rows compress on the appending thread. 'CPU vs plain' = plain's append CPU "
        "time (all threads) / this row's: independent of other work on the machine.",
        "",
        "| codec | records | size | append rec/s | vs plain | replay rec/s | vs plain | ratio "
        "| CPU vs plain |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.codec} | {r.kind} | {r.size} B | {r.append_rps:,.0f} | "
            f"{r.append_vs_plain:.2f}x | {r.replay_rps:,.0f} | {r.replay_vs_plain:.2f}x | "
            f"{r.ratio:.2f} | {r.cpu_vs_plain:.2f}x |"
        )
    return "\n".join(lines) + "\n"
