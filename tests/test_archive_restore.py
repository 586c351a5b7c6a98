"""Restore, verify and mirror (issue 12): every object checked, damage named, a restore that
refuses a non-empty target, resumes when interrupted, and a mirror that follows."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import segwal
from conftest import payload
from segwal.archive.memory import MemoryStore
from segwal.archive.objects import parse_segment_key
from segwal.archive.retention import prune_archive as prune_store

FAST = {"archive_poll_interval": 0.02, "segment_bytes": 4096}


def archived_log(tmp_path: Path, count: int = 300) -> tuple[MemoryStore, list[str]]:
    store = MemoryStore()
    with segwal.open(tmp_path / "log", archive=store, **FAST) as wal:
        for lsn in range(1, count + 1):
            wal.append(payload(lsn, 100))
        wal.rotate()
        assert wal.wait_archived(count, timeout=30)
    keys = [k for k in sorted(store.objects) if parse_segment_key(k) is not None]
    return store, keys


def records(path: str | Path) -> list[tuple[int, bytes]]:
    with segwal.open(path, readonly=True) as wal:
        return [(r.lsn, r.payload) for r in wal.replay()]


def test_restore_equals_the_original_latest_lsn_and_time(tmp_path: Path) -> None:
    store, _keys = archived_log(tmp_path)
    original = records(tmp_path / "log")
    latest = segwal.restore(store, tmp_path / "latest")
    assert records(latest.path) == original and "newest of 1" in latest.reason
    cut = segwal.restore(store, tmp_path / "cut", to_lsn=123)
    assert records(cut.path) == original[:123]
    with segwal.open(tmp_path / "log", readonly=True) as wal:
        moment = wal.read(200).timestamp_us
    timed = segwal.restore(store, tmp_path / "timed", to_time=moment / 1e6)
    got = records(timed.path)
    assert got[-1][0] >= 200 and got == original[: len(got)]
    with segwal.open(tmp_path / "log", readonly=True) as wal:
        assert all(wal.read(lsn).timestamp_us <= moment for lsn, _ in got)


def test_a_non_empty_target_is_refused_with_nothing_written(tmp_path: Path) -> None:
    store, _keys = archived_log(tmp_path, 50)
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(segwal.RestoreTargetError) as caught:
        segwal.restore(store, target)
    assert caught.value.path == str(target)
    assert sorted(os.listdir(tmp_path)) == before and os.listdir(target) == ["keep.txt"]


class Interrupted(Exception):
    """The restore's process stopped half-way."""


def test_an_interrupted_restore_finishes_on_rerun(tmp_path: Path) -> None:
    store, keys = archived_log(tmp_path)

    def interrupt(done: int, _total: int, _bytes: int) -> None:
        if done == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        segwal.restore(store, tmp_path / "r", parallel=1, progress=interrupt)
    assert not (tmp_path / "r").exists()
    gets = store.requests["get"]
    result = segwal.restore(store, tmp_path / "r", parallel=1)
    assert 0 < result.downloaded <= len(keys) - 3  # what the first run checked is kept
    assert store.requests["get"] - gets < len(keys) + 1
    assert records(result.path) == records(tmp_path / "log")
    # A rerun with other parameters does not mix two restores.
    (tmp_path / ".r3.restore").mkdir()
    (tmp_path / ".r3.restore" / "RESTORE.plan").write_text("{}")
    with pytest.raises(segwal.RestoreTargetError, match="other parameters"):
        segwal.restore(store, tmp_path / "r3")


@pytest.mark.parametrize("damage", ["flip", "swap", "delete", "truncate"])
def test_damaged_objects_are_named_by_restore_and_verify(tmp_path: Path, damage: str) -> None:
    store, keys = archived_log(tmp_path)
    victim = keys[2]
    if damage == "flip":
        data = bytearray(store.objects[victim].data)
        data[500] ^= 0x01
        store.objects[victim].data = bytes(data)
    elif damage == "swap":
        store.objects[victim].data, store.objects[keys[3]].data = (
            store.objects[keys[3]].data,
            store.objects[victim].data,
        )
    elif damage == "delete":
        del store.objects[victim]
    else:
        store.objects[victim].data = store.objects[victim].data[:-10]
    report = segwal.verify_archive(store)
    assert not report.ok
    named = {p.key for p in report.problems}
    assert victim in named or keys[3] in named, report.problems
    problem = report.problems[0]
    assert problem.reason and (problem.first_lsn is not None)
    with pytest.raises(segwal.ArchiveCorruptError) as caught:
        segwal.restore(store, tmp_path / "r")
    assert caught.value.key in (victim, keys[3]) and caught.value.first_lsn is not None
    assert not (tmp_path / "r").exists()


def test_short_and_failed_gets_are_retried(tmp_path: Path) -> None:
    store, _keys = archived_log(tmp_path, 100)
    # Bodies end after 1,000 bytes (the small ARCHIVE and GEN records are whole).
    store.truncate_get(1000, silent=True)  # a proxy that ends the body early, silently
    store.truncate_get(1000)  # a client that notices
    store.fail("get", times=2, status=503)
    store.fail("head", times=1, status=500)
    result = segwal.restore(store, tmp_path / "r", parallel=1)
    assert result.retries >= 4
    assert records(result.path) == records(tmp_path / "log")


def test_a_listing_missing_the_newest_key_restores_a_consistent_prefix(tmp_path: Path) -> None:
    store, _keys = archived_log(tmp_path)
    store.hide_newest(1)
    result = segwal.restore(store, tmp_path / "r")
    full = records(tmp_path / "log")
    assert records(result.path) == full[: result.last_lsn] and result.last_lsn < len(full)
    store.hide_newest(1)
    with pytest.raises(segwal.ArchiveNotFoundError, match="no generation holds LSN"):
        segwal.restore(store, tmp_path / "r2", to_lsn=len(full))


def test_a_restored_log_that_writes_starts_a_new_generation(tmp_path: Path) -> None:
    store, _keys = archived_log(tmp_path)
    first = segwal.restore(store, tmp_path / "r", to_lsn=150)
    with segwal.open(first.path, archive=store, **FAST) as wal:
        assert wal.archive_status().generation is None
        wal.append(b"a new branch")
        wal.rotate()
        assert wal.wait_archived(151, timeout=30)
        second = wal.archive_status().generation
    assert second is not None and second != first.generation
    listing = segwal.list_archive(store)
    assert listing.generations[second].parent == first.generation
    assert segwal.verify_archive(store).ok
    again = segwal.restore(store, tmp_path / "again")
    assert again.generation == second and again.last_lsn == 151
    assert records(again.path)[:150] == records(tmp_path / "log")[:150]
    older = segwal.restore(store, tmp_path / "older", generation=first.generation)
    assert older.last_lsn == 300


def test_mirror_follows_resumes_and_reports_a_rewrite(tmp_path: Path) -> None:
    store = MemoryStore()
    with segwal.open(tmp_path / "log", archive=store, **FAST) as wal:
        for lsn in range(1, 101):
            wal.append(payload(lsn, 100))
        wal.rotate()
        assert wal.wait_archived(100, timeout=30)
        first = segwal.mirror(store, tmp_path / "m")
        assert first.last_lsn == 100
        with segwal.open(tmp_path / "m", readonly=True) as view:
            cursor = view.cursor("reader")
            assert [r.lsn for r in cursor.read_batch(max_records=5).records] == [1, 2, 3, 4, 5]
            for lsn in range(101, 201):
                wal.append(payload(lsn, 100))
            wal.rotate()
            assert wal.wait_archived(200, timeout=30)
            lists = store.requests["list"]
            second = segwal.mirror(store, tmp_path / "m")  # a restart resumes
            assert store.requests["list"] - lists == 1  # one LIST per poll
            assert second.last_lsn == 200 and second.added >= 1
            view.refresh()
            assert [r.lsn for r in view.follow(150, timeout=0.1)][-1] == 200
        assert records(tmp_path / "m") == records(tmp_path / "log")
        wal.truncate_after(120)
        wal.append(b"rewritten")
        wal.rotate()
        assert wal.wait_archived(121, timeout=30)
    with pytest.raises(segwal.ArchiveDivergedError, match="rewrote") as caught:
        segwal.mirror(store, tmp_path / "m")
    assert caught.value.lsn == 201


def test_mirror_names_an_archive_pruned_past_it(tmp_path: Path) -> None:
    store, keys = archived_log(tmp_path, 100)
    with segwal.open(tmp_path / "log", archive=store, **FAST) as wal:
        segwal.mirror(store, tmp_path / "m")
        for lsn in range(101, 301):
            wal.append(payload(lsn, 100))
        wal.rotate()
        assert wal.wait_archived(300, timeout=30)
    newer = [k for k in sorted(store.objects) if parse_segment_key(k) and k not in keys]
    del store.objects[newer[0]]  # pruned (or lost) right after the mirror's position
    with pytest.raises(segwal.ArchiveDivergedError, match="no longer holds"):
        segwal.mirror(store, tmp_path / "m")


def test_archive_retention_plans_then_deletes_and_restore_still_works(tmp_path: Path) -> None:
    store, keys = archived_log(tmp_path)
    with pytest.raises(segwal.ConfigError):
        segwal.prune_archive(store)
    total = sum(len(store.objects[k].data) for k in keys)
    first = segwal.prune_archive(store, max_bytes=total // 2, delay=3600)
    assert first.planned == keys[: len(first.planned)] and first.planned and not first.deleted
    assert all(k in store.objects for k in keys)  # phase one deletes nothing
    again = segwal.prune_archive(store, max_bytes=total // 2, delay=3600)
    assert not again.planned and again.pending == 1  # already planned: no second manifest
    assert first.not_before_us is not None  # an hour later:
    done = prune_store(store, max_bytes=total // 2, delay=0, now_us=first.not_before_us)
    assert set(first.planned) <= set(done.deleted)
    assert keys[-1] in store.objects  # never the newest segment
    everything = segwal.prune_archive(store, max_bytes=1, delay=0)
    later = segwal.prune_archive(store, max_bytes=1, delay=0)
    assert keys[-1] in store.objects and keys[-1] not in everything.planned + later.deleted
    assert segwal.verify_archive(store).ok
    survivors = [k for k in keys if k in store.objects]
    restored = segwal.restore(store, tmp_path / "r")
    assert restored.first_lsn == int(survivors[0].rsplit("/", 1)[1][:20])
    assert records(restored.path) == records(tmp_path / "log")[restored.first_lsn - 1 :]
