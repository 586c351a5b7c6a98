"""Compression dictionaries across crashes, on the in-memory file system.

The workload creates a log compressed with a trained dictionary (the dictionary file is
written and made durable first, then the first segment that names it), appends single small
records over several segments, reopens with a second dictionary (added to the log, named by
the segments created after it) and writes on. At every operation index, crash images of what
a power loss could leave are opened again (without any dictionary option: the log's own
files must be enough), and checked:

- the log opens, and every record of it reads back (a segment never names a dictionary the
  crash lost or tore), acknowledged records included;
- a writer writes on, and ``verify`` then finds nothing wrong;
- skipping the dictionary's data barrier (``dictionary.sync``) breaks the first check: the
  enumeration sees the step.
"""

from __future__ import annotations

import segwal
from dictlib import record, trained
from segwal.testing import MemoryFileSystem

PATH = "/log"
SEGMENT_BYTES = 600
IMAGES_PER_POINT = 4


def _open(fs: MemoryFileSystem, dictionary: bytes | None) -> segwal.Wal:
    return segwal.open(
        PATH,
        filesystem=fs,
        compression="zstd",
        compression_dictionary=dictionary,
        segment_bytes=SEGMENT_BYTES,
        sync="always",
    )


def workload(fs: MemoryFileSystem) -> None:
    wal = _open(fs, trained(0))
    for i in range(12):
        fs.mark_ack(wal.append(record(i)))
    wal.close()
    wal = _open(fs, trained(1))
    wal.rotate()  # the next segment names the second dictionary
    for i in range(12, 20):
        fs.mark_ack(wal.append(record(i, 1)))
    wal.close()


def _check(image: MemoryFileSystem, acked: int) -> str | None:
    try:
        wal = _open(image, None)
    except segwal.SegwalError as exc:
        return f"reopen raised {exc!r}"
    try:
        got = [r.payload for r in wal.replay()]
        if len(got) < acked:
            return f"{len(got)} records read back, {acked} were acknowledged"
        wal.append(b"after the crash " * 8)
        wal.rotate()
        wal.append(b"after the crash " * 8)
        wal.close()
    except segwal.SegwalError as exc:
        return f"after reopening: {exc!r}"
    report = segwal.verify(PATH, filesystem=image)
    if not report.ok:
        return f"verify: {report.problems[:2]}"
    return None


def enumerate_crashes(skip: tuple[str, ...] = ()) -> tuple[list[str], int]:
    fs = MemoryFileSystem(skip_sync_sites=skip)
    workload(fs)
    problems: list[str] = []
    checked = 0
    for k, state in fs.replays():
        acked = len(state.notes("ack"))
        for image in state.crash_states(seed=k, limit=IMAGES_PER_POINT, random_subsets=4):
            checked += 1
            problem = _check(image, acked)
            if problem is not None:
                problems.append(f"op {k}: {problem}")
    return problems, checked


def test_a_dictionary_survives_every_crash_before_its_segments() -> None:
    problems, checked = enumerate_crashes()
    assert checked > 100
    assert not problems, problems[:5]


def test_the_workload_uses_both_dictionaries() -> None:
    fs = MemoryFileSystem()
    workload(fs)
    with _open(fs, None) as wal:
        assert [r.payload for r in wal.replay()][:1] == [record(0)]
    infos = segwal.list_dictionaries(PATH, filesystem=fs)
    assert len(infos) == 2 and all(info.segments for info in infos)


def test_skipping_the_dictionary_barrier_breaks_the_promise() -> None:
    problems, _ = enumerate_crashes(skip=("dictionary.sync",))
    assert problems, "skipping dictionary.sync broke nothing: the enumeration has a blind spot"
    assert any("dictionary" in p for p in problems), problems[:3]
