"""Point reads, counted by callgrind: instructions per ``read(lsn)``.

The fixed log of ``bench_decode.py`` (100,000 x 100 B in batches of 1,000: 100 frames of
~100 KB) is read at N pseudo-random LSNs (a fixed seed), through the writer's view or a
readonly one. Instruction counts repeat for the same code and input, so the cost of one
read is ``(Ir(N) - Ir(0)) / N``::

    python benchmarks/bench_decode.py write DIR
    for n in 0 20000; do
      PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python benchmarks/bench_point.py DIR $n [ro]
    done

With ``nocache`` as a further argument the log is opened with ``read_cache_bytes=0``.
"""

from __future__ import annotations

import random
import sys

import segwal

RECORDS = 100_000


def main(path: str, reads: int, *flags: str) -> None:
    options: dict[str, object] = {}
    if "nocache" in flags:
        options["read_cache_bytes"] = 0
    readonly = "ro" in flags
    rng = random.Random(7)
    lsns = [rng.randrange(1, RECORDS + 1) for _ in range(reads)]
    with segwal.open(path, readonly=readonly, sync="never", **options) as wal:  # type: ignore[arg-type]
        read = wal.read
        for lsn in lsns:
            read(lsn)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:])
