#!/usr/bin/env python3
"""The side-by-side benchmark now lives in the package: ``segwal bench``.

This script only calls it, so that ``python benchmarks/bench_core.py`` keeps working from a
checkout; every option is the command's (``--quick``, ``--only REGEX``, ``--repeat N``,
``--dir``, ``--out``, ``--plot``, ``--json``, ``--list``). See benchmarks/README.md.

    python benchmarks/bench_core.py --quick          # = python -m segwal.bench --quick
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from segwal.bench.command import bench
except ImportError:  # running from a checkout without an installed segwal
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from segwal.bench.command import bench

if __name__ == "__main__":
    bench(prog_name="bench_core.py")
