"""direct_io appends through the compiled fast path (format/_direct.c) against the general
path (storage/blocks.py DirectTail.put, the reference): across a preallocation step (the
fast path must leave to SegmentWriter.write the append whose padded block passes the
allocation) and a rotation, the segment's whole file (zero padding included), the
DirectTail's partial block and the writer's allocation agree after every append.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import segwal
from conftest import FakeClock
from segwal.storage.fileio import DIRECT_BLOCK
from test_fast_appender import AVAILABLE, _path

# Two preallocation steps of 1 MiB (config.PREALLOCATE_STEP) in one segment, then a rotation.
SEGMENT = 2 << 20


def _state(wal: Any) -> tuple[object, ...]:
    writer = wal._state.writer
    handle = writer.handle
    return (
        writer.offset,
        writer.allocated,
        writer.direct.tail,
        handle.size(),
        handle.pread(handle.size(), 0),
    )


def _run(path: Path) -> tuple[list[object], list[object], int]:
    """What each append left (sampled, and around each allocation step), the LSNs, and how
    many appends the compiled path took."""
    wal = segwal.open(path, sync="never", clock=FakeClock(), segment_bytes=SEGMENT, direct_io=True)
    seen: list[object] = []
    lsns: list[object] = []
    allocated = wal._state.writer.allocated if wal._state.writer is not None else 0
    for i in range(6000):
        lsns.append(wal.append(bytes([i % 251]) * ((i * 389) % 1000), type=i % 3))
        writer = wal._state.writer
        if i % 97 == 0 or writer.allocated != allocated:
            seen.append(_state(wal))  # every step: the append before it and the one past it
            allocated = writer.allocated
    fast = wal._appender._fast
    taken = fast.tally()[0] if fast is not None else 0
    seen.append(_state(wal))
    wal.close()
    with segwal.open(path) as wal:
        assert [r.lsn for r in wal.replay()] == lsns
    return seen, lsns, taken


@pytest.mark.skipif("compiled" not in AVAILABLE, reason="segwal.format._encode is not built")
def test_compiled_direct_appends_cross_allocation_steps_like_the_general_path(
    tmp_path: Path,
) -> None:
    runs = {}
    for name in ("compiled", "general"):
        with _path(name):
            runs[name] = _run(tmp_path / name)
    seen, lsns, taken = runs["compiled"]
    assert taken > 5000  # the compiled path wrote nearly all of them
    assert runs["general"][2] == 0
    # A step crossed in each segment (allocations not block-aligned: the header's 128 bytes
    # plus 1 MiB, so a fast append's padding must stop at the block below it).
    allocations = [s[1] for s in seen if isinstance(s, tuple)]
    assert len(set(allocations)) >= 2
    assert min(allocations) % DIRECT_BLOCK != 0
    # The padded block never passed the allocation (the file never grew past it).
    assert all(s[3] == s[1] for s in seen if isinstance(s, tuple))
    assert lsns == runs["general"][1]
    assert seen == runs["general"][0]
