#!/usr/bin/env python3
"""Long fuzzing runs of segwal under atheris (libFuzzer, coverage-guided), by hand.

The target is the one CI runs under hypothesis: ``tests/fuzz_target.py:fuzz_one``. It reads
the input as a small program (a reference log, the checks to run, then mutations) and runs
verify, open in each recovery mode, replay, read, append and a second open on a
MemoryFileSystem. Anything but a ``segwal.SegwalError``, or a broken invariant, is a crash.

Setup and a four-hour run (2 workers, seeds as the starting corpus)::

    .venv/bin/pip install atheris          # 2.3+ / 3.x have wheels for CPython 3.11
    mkdir -p fuzz/corpus
    .venv/bin/python fuzz/atheris_fuzz.py --make-corpus fuzz/corpus
    .venv/bin/python fuzz/atheris_fuzz.py fuzz/corpus tests/fuzz_seeds \\
        -max_total_time=14400 -rss_limit_mb=2048 -timeout=20 -jobs=2 -workers=2

Options of this script (the rest go to libFuzzer):

``--known=skip`` (default)
    known, not yet fixed findings (``fuzz_target.KNOWN_FINDINGS``) are counted and
    ignored, so the run keeps looking for new ones;
``--known=fail``
    they crash like any other finding;
``--make-corpus DIR``
    write a starting corpus of small programs (each mutation on each reference log) and exit;
``--memory-every N``
    run one input in N under tracemalloc and crash if it peaks over 64 MiB (default 200).

A crash leaves ``crash-<sha1>`` in the current directory. Reproduce it with
``.venv/bin/python fuzz/atheris_fuzz.py crash-<sha1>``, then keep it as
``tests/fuzz_seeds/<finding>.bin`` (and, while the bug is open, list it in ``OPEN_SEEDS`` in
``tests/test_fuzz.py`` and teach ``fuzz_target.known_finding`` its signature).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent / "src"))

MEMORY_LIMIT = 64 << 20
TIME_LIMIT = 10.0


def _options(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    ours: dict[str, str] = {"known": "skip", "memory-every": "200"}
    rest: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg.startswith("--known="):
            ours["known"] = arg.split("=", 1)[1]
        elif arg == "--make-corpus":
            ours["make-corpus"] = next(it)
        elif arg.startswith("--memory-every="):
            ours["memory-every"] = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    if ours["known"] not in ("skip", "fail"):
        raise SystemExit("--known must be skip or fail")
    return ours, rest


def make_corpus(directory: str) -> None:
    """One small program per (reference log, mutation, a few argument patterns)."""
    import fuzz_target as ft

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    patterns = [bytes(12), bytes([1] * 12), bytes([0xFF] * 12), bytes(range(3, 15))]
    for flavour in range(5):
        for op in ft.OPCODES:
            for i, args in enumerate(patterns):
                data = bytes([flavour, 0x1F]) + bytes(6) + ft.encode_op(op, args, b"RS\x00\xff")
                (out / f"{flavour}-{op}-{i}").write_bytes(data)
                count += 1
    print(f"wrote {count} inputs to {out}")


def main() -> None:
    ours, argv = _options(sys.argv)
    if "make-corpus" in ours:
        make_corpus(ours["make-corpus"])
        return
    try:
        import atheris  # type: ignore[import-untyped]
    except ImportError:
        raise SystemExit(
            "atheris is not installed: .venv/bin/pip install atheris "
            "(needs a CPython it has wheels for, or clang to build it)"
        ) from None

    with atheris.instrument_imports(include=["segwal", "fuzz_target"]):
        import fuzz_target as ft
        import segwal  # noqa: F401  (instrumented for coverage)

    logging.getLogger("segwal").setLevel(logging.CRITICAL)
    ft.reference_logs()
    skip_known = ours["known"] == "skip"
    every = max(1, int(ours["memory-every"]))
    stats: Counter[str] = Counter()
    last_report = [time.monotonic()]

    def test_one_input(data: bytes) -> None:
        stats["inputs"] += 1
        measure = stats["inputs"] % every == 0
        start = time.perf_counter()
        if measure:
            tracemalloc.start()
        try:
            ft.fuzz_one(data)
        except Exception as exc:
            known = ft.known_finding(exc, data) if skip_known else None
            if known is None:
                sys.stderr.write(f"\n{ft.describe(data)}\n")
                raise
            stats[known] += 1
        finally:
            if measure:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                if peak > MEMORY_LIMIT:
                    raise MemoryError(f"one input peaked at {peak} bytes: {data.hex()}")
        elapsed = time.perf_counter() - start
        if elapsed > TIME_LIMIT:
            raise TimeoutError(f"one input took {elapsed:.1f} s: {data.hex()}")
        now = time.monotonic()
        if now - last_report[0] > 60:
            last_report[0] = now
            hits = {k: v for k, v in stats.items() if k != "inputs"}
            sys.stderr.write(f"[segwal fuzz pid {os.getpid()}] {stats['inputs']} inputs, "
                             f"known findings {hits}\n")  # fmt: skip

    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
