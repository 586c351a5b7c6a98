"""The replay loop, measured two ways: callgrind instructions and a side-by-side wall clock.

A fixed log (100,000 records of 100 bytes, appended in batches of 1,000, fixed clock and
payloads) is written once; then the script times the replay loop alone. The frame decoder
in use is the compiled one unless ``SEGWAL_PURE=1`` is set (read at import).

    python benchmarks/bench_decode.py write DIR [BATCH]  # write the fixed log into DIR
    python benchmarks/bench_decode.py open DIR           # open and close only (the baseline)
    python benchmarks/bench_decode.py replay DIR         # open, replay everything, close
    python benchmarks/bench_decode.py compare [DIR]      # pure vs C wall clock, one run
    python benchmarks/bench_decode.py compare DIR OLD_SRC  # ... and an older checkout's src/

Instruction counts repeat exactly for the same code and input, so the replay loop's cost is
``Ir(replay) - Ir(open)``, both under callgrind::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python bench_decode.py open DIR
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python bench_decode.py replay DIR
    SEGWAL_PURE=1 valgrind ...                                                   # the same, pure

``compare`` runs each decoder in its own subprocess (the choice is made at import),
alternating them, and prints the median seconds per replay and the ratios. Given the
``src`` folder of an older checkout (``git archive REV src | tar -x -C /tmp/old``), it
times that one too, as "old" (its segwal first on ``PYTHONPATH``).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

import segwal

RECORDS = 100_000
BATCH = 1_000
SIZE = 100
T0 = 1_700_000_000_000_000


def write(path: str, batch: int = BATCH) -> None:
    ticks = iter(range(T0, T0 + 10 * RECORDS))
    with segwal.open(path, sync="never", clock=lambda: next(ticks)) as wal:
        for start in range(0, RECORDS, batch):
            wal.append_batch(
                [(i % 251).to_bytes(1, "little") * SIZE for i in range(start, start + batch)]
            )
        wal.sync()


def replay(path: str) -> int:
    total = 0
    with segwal.open(path, readonly=True) as wal:
        for record in wal.replay():
            total += len(record.payload)
    return total


def implementation() -> str:
    try:
        from segwal.format import records  # a script, not the package: any import goes
    except ImportError:
        return "old"  # a checkout from before format.records
    return records.IMPLEMENTATION


def child_timings(path: str, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        started = time.perf_counter()
        total = replay(path)
        out.append(time.perf_counter() - started)
        assert total == RECORDS * SIZE
    return out


def compare(path: str, old_src: str | None = None, rounds: int = 5, turns: int = 3) -> None:
    contenders = {"python": {"SEGWAL_PURE": "1"}, "c": {"SEGWAL_PURE": "0"}}
    if old_src is not None:
        contenders["old"] = {"PYTHONPATH": old_src}
    results: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(turns):
        for name, extra in contenders.items():
            proc = subprocess.run(
                [sys.executable, __file__, "_child", path, str(rounds)],
                env=os.environ | extra,
                capture_output=True,
                text=True,
                check=True,
            )
            impl, *times = proc.stdout.split()
            if impl != name:
                raise SystemExit(f"asked for the {name} decoder, got {impl} (is it built?)")
            results[name] += [float(t) for t in times]
    medians = {name: statistics.median(times) for name, times in results.items()}
    print(f"replay of {RECORDS:,} records of {SIZE} B, batches of {BATCH:,}")
    for name, median in medians.items():
        ratio = median / medians["c"]
        print(
            f"  {name:7} median {median * 1e3:8.2f} ms over {len(results[name])} runs,"
            f" {ratio:.2f}x the time of c"
        )


def main(argv: list[str]) -> None:
    cmd = argv[1] if len(argv) > 1 else "compare"
    if cmd == "write":
        write(argv[2], int(argv[3]) if len(argv) > 3 else BATCH)
    elif cmd == "open":
        with segwal.open(argv[2], readonly=True):
            pass
    elif cmd == "replay":
        print(replay(argv[2]))
    elif cmd == "_child":
        times = child_timings(argv[2], int(argv[3]))
        print(implementation(), *times)
    elif cmd == "compare":
        if len(argv) > 2:
            compare(argv[2], argv[3] if len(argv) > 3 else None)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                write(tmp)
                compare(tmp)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
