"""A resumed restore builds one history (the generation pinned by its first run), and a
restore to an LSN or a time refuses a gap at the target (review defects 1 and 2)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import segwal
from segwal.archive.memory import MemoryStore
from segwal.archive.objects import parse_segment_key

FAST = {"archive_poll_interval": 0.02, "segment_bytes": 4096}


class Interrupted(Exception):
    """The restore's process stopped half-way."""


def stop_after(count: int):  # type: ignore[no-untyped-def]
    def progress(done: int, _total: int, _bytes: int) -> None:
        if done == count:
            raise Interrupted

    return progress


def records(path: str | Path) -> list[tuple[int, bytes]]:
    with segwal.open(path, readonly=True) as wal:
        return [(r.lsn, bytes(r.payload)) for r in wal.replay()]


def segment_keys(store: MemoryStore) -> list[str]:
    return [k for k in sorted(store.objects) if parse_segment_key(k) is not None]


def write_log(path: Path, store: MemoryStore, tag: bytes, count: int = 60) -> segwal.Wal:
    wal = segwal.open(path, archive=store, **FAST)
    for i in range(count):
        wal.append(tag + b"%03d" % i + b"x" * 200)
    wal.rotate()
    assert wal.wait_archived(wal.last_lsn, timeout=30)
    return wal


def test_a_rerun_restores_the_generation_its_first_run_chose(tmp_path: Path) -> None:
    store = MemoryStore()
    wal = write_log(tmp_path / "log", store, b"a")
    before = records(tmp_path / "log")
    with pytest.raises(Interrupted):
        segwal.restore(store, tmp_path / "r", parallel=1, progress=stop_after(4))
    # Meanwhile the log rewinds and archives a newer generation with other records.
    wal.truncate_after(30)
    for i in range(10):
        wal.append(b"b%03d" % i + b"y" * 200)
    wal.rotate()
    assert wal.wait_archived(wal.last_lsn, timeout=30)
    wal.close()
    result = segwal.restore(store, tmp_path / "r", parallel=1)
    assert records(result.path) == before  # one history, not the old tail under a new head
    fresh = segwal.restore(store, tmp_path / "r2")
    assert fresh.generation != result.generation
    assert records(fresh.path) == records(tmp_path / "log")


def test_a_rerun_refuses_when_the_pinned_chain_changed(tmp_path: Path) -> None:
    store = MemoryStore()
    wal = write_log(tmp_path / "log", store, b"a")
    with pytest.raises(Interrupted):
        segwal.restore(store, tmp_path / "g", parallel=1, progress=stop_after(1))
    # The same generation growing meanwhile is the same history, longer.
    for i in range(20):
        wal.append(b"c%03d" % i + b"x" * 200)
    wal.rotate()
    assert wal.wait_archived(wal.last_lsn, timeout=30)
    wal.close()
    grown = segwal.restore(store, tmp_path / "g", parallel=1)
    assert records(grown.path) == records(tmp_path / "log")
    with pytest.raises(Interrupted):
        segwal.restore(store, tmp_path / "r", parallel=1, progress=stop_after(1))
    store.delete(segment_keys(store)[-1])
    with pytest.raises(segwal.RestoreTargetError, match="archive changed"):
        segwal.restore(store, tmp_path / "r", parallel=1)
    assert not (tmp_path / "r").exists()


def test_foreign_and_stray_segment_files_in_the_work_directory_are_not_kept(
    tmp_path: Path,
) -> None:
    store, other = MemoryStore(), MemoryStore()
    write_log(tmp_path / "log", store, b"a").close()
    write_log(tmp_path / "other", other, b"z").close()
    with pytest.raises(Interrupted):
        segwal.restore(store, tmp_path / "r", parallel=1, progress=stop_after(1))
    work = tmp_path / ".r.restore"
    theirs = segment_keys(other)
    # A whole, valid segment of another log under a name of the chain, and one the chain
    # does not name at all.
    (work / os.path.basename(theirs[1])).write_bytes(other.objects[theirs[1]].data)
    (work / "00000000000000009001.wal").write_bytes(other.objects[theirs[-1]].data)
    result = segwal.restore(store, tmp_path / "r", parallel=1)
    assert records(result.path) == records(tmp_path / "log")
    assert "00000000000000009001.wal" not in os.listdir(result.path)


def test_a_missing_segment_at_the_target_lsn_or_time_is_a_gap(tmp_path: Path) -> None:
    store = MemoryStore()
    stamps = {}
    with segwal.open(tmp_path / "log", archive=store, **FAST) as wal:
        for _ in range(60):
            lsn = wal.append(b"x" * 200)
            stamps[lsn] = time.time_ns() // 1000
            time.sleep(0.001)
        wal.rotate()
        assert wal.wait_archived(wal.last_lsn, timeout=30)
    keys = segment_keys(store)
    target = keys[1]
    parsed = parse_segment_key(target)
    assert parsed is not None
    first = parsed[1]
    store.delete(target)
    for n, kwargs in enumerate(({"to_lsn": first + 2}, {"to_time": stamps[first + 2] / 1e6})):
        with pytest.raises(segwal.ArchiveCorruptError, match="gap"):
            segwal.restore(store, tmp_path / f"r{n}", **kwargs)  # type: ignore[arg-type]
        assert not (tmp_path / f"r{n}").exists()
    # A target before the gap still restores.
    result = segwal.restore(store, tmp_path / "ok", to_lsn=first - 2)
    assert result.last_lsn == first - 2
