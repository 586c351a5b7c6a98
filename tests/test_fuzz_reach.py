"""The fuzz target reaches the compiled decoder, on good frames and on frames it refuses.

``tests/fuzz_target.py`` runs segwal's public API over damaged directories; the records it
reads are built by ``format.records.stream_records``, the C function when the speed-up is
built. A refactor that routed reads around it (or a build that quietly fell back to the pure
decoder) would leave the fuzzer testing only the reference. Here the regression seeds and a
fixed sample of random programs run under a profile hook that counts the calls of the
compiled functions as the interpreter sees them.
"""

from __future__ import annotations

import os
import random
import sys
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import segwal
from fuzz_target import OPCODES, encode_op, fuzz_one, known_finding
from segwal.format import records

SEEDS = Path(__file__).resolve().parent / "fuzz_seeds"


def programs(count: int) -> list[bytes]:
    """The seeds, then ``count`` reproducible random programs: a flavour, options with reads,
    and a few mutations each (crafted frames among them)."""
    out = [path.read_bytes() for path in sorted(SEEDS.glob("*.bin"))]
    rng = random.Random(15)
    crafted = [op for op in OPCODES if "frame" in op]
    for i in range(count):
        data = bytes([i % 4, 16 | rng.randrange(16)])  # a reference log; 16: read some LSNs
        data += rng.randbytes(6)
        for _ in range(rng.randrange(1, 4)):
            op = rng.choice(crafted) if crafted and rng.random() < 0.5 else rng.choice(OPCODES)
            data += encode_op(op, rng.randbytes(16), rng.randbytes(rng.randrange(40)))
        out.append(data)
    return out


def test_fuzz_target_calls_the_compiled_decoder() -> None:
    if records.decode_records_c is None:
        # CI always has a compiler: there a missing module is a broken build.
        assert os.environ.get("CI") != "true", "CI=true: segwal.format._speedups is not built"
        pytest.skip("the compiled decoder is not built (no C compiler?)")
    if segwal.DECODER != "c":
        pytest.skip("SEGWAL_PURE_PYTHON chose the pure decoder for this process")
    watched = {id(records.decode_records_c): "decode", id(records.record_spans_c): "spans"}
    seen: Counter[str] = Counter()

    def hook(_frame: FrameType, event: str, arg: Any) -> None:
        if event in ("c_call", "c_exception"):
            name = watched.get(id(arg))
            if name is not None:
                seen[f"{name} {event}"] += 1

    inputs = programs(150)
    reached = 0
    old = sys.getprofile()
    sys.setprofile(hook)
    try:
        for data in inputs:
            before = seen["decode c_call"]
            try:
                fuzz_one(data)
            except Exception as exc:  # a known finding; test_fuzz.py judges the rest
                if known_finding(exc, data) is None:
                    raise
            reached += seen["decode c_call"] > before
    finally:
        sys.setprofile(old)
    # Every program starts from a reference log and mutates it; most still hold frames that
    # replay and read decode. (The frame check validates a length table before the decoder
    # sees it, so the decoder's own refusals are tested in test_speedups.py, not here.)
    assert reached >= len(inputs) // 3, f"{reached} of {len(inputs)} inputs reached it: {seen}"
    assert seen["decode c_call"] >= 10 * reached, seen
