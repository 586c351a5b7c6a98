"""The uploader (issue 12): sealed segments reach the archive in order, exactly once, and a
store that fails never costs the local log anything.

Faults come from the in-memory store (``segwal.archive.memory``); the plain path also runs
on the ``file://`` store (and on Ceph through ``tests/test_archive_ceph.py``).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import segwal
from conftest import payload
from segwal.archive.catalog import read_listing, verify_archive
from segwal.archive.memory import MemoryStore
from segwal.archive.objects import parse_segment_key
from segwal.archive.store import ObjectStore
from segwal.archive.urls import open_store

SEGMENT = 4096
FAST = {"archive_poll_interval": 0.02, "segment_bytes": SEGMENT}


@pytest.fixture(params=["memory", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    made: ObjectStore = (
        MemoryStore() if request.param == "memory" else open_store((tmp_path / "arch").as_uri())
    )
    yield made
    made.close()


def fill(wal: segwal.Wal, count: int, size: int = 100) -> None:
    start = wal.next_lsn
    for lsn in range(start, start + count):
        wal.append(payload(lsn, size))


def segment_keys(store: ObjectStore) -> list[str]:
    return [i.key for i in store.list("g/") if parse_segment_key(i.key) is not None]


def archive_everything(wal: segwal.ArchivedWal) -> None:
    wal.rotate()
    assert wal.wait_archived(wal.last_lsn, timeout=30), wal.archive_status()


def test_sealed_segments_are_archived_once_in_order(store: ObjectStore, tmp_path: Path) -> None:
    with segwal.open(tmp_path / "log", archive=store, **FAST) as wal:
        assert isinstance(wal, segwal.ArchivedWal)
        fill(wal, 300)
        archive_everything(wal)
        local = [s for s in wal.segments() if s.sealed]
        status = wal.archive_status()
        assert status.archived_lsn == 300 and status.lag_segments == 0
        assert status.uploads == len(local) and status.last_error is None
        assert wal.holds()["archive"] == 301
    keys = segment_keys(store)
    assert [parse_segment_key(k)[1] for k in keys] == [s.first_lsn for s in local]  # type: ignore[index]
    assert verify_archive(store).ok


def test_reopening_resumes_without_uploading_twice(tmp_path: Path) -> None:
    store = MemoryStore()
    with segwal.open(tmp_path / "log", archive=store, **FAST) as wal:
        fill(wal, 100)
        archive_everything(wal)
    puts, before = store.requests["put"], len(segment_keys(store))
    with segwal.open(tmp_path / "log", archive=store, archive_probe=False, **FAST) as wal:
        fill(wal, 100)
        archive_everything(wal)
        uploads = wal.archive_status().uploads
    assert uploads == len(segment_keys(store)) - before > 0
    assert len(read_listing(store).generations) == 1
    # one PUT per new segment, and one conditional re-create of GEN (a 412: it exists)
    assert store.requests["put"] - puts == uploads + 1


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_back_off_and_are_counted(tmp_path: Path, status: int) -> None:
    store = MemoryStore()
    with segwal.open(tmp_path / "log", archive=store, **FAST) as wal:
        store.fail("put", times=4, status=status)
        fill(wal, 50)
        archive_everything(wal)
        found = wal.archive_status()
        assert found.retries == 4 and found.last_error is not None
        assert f"HTTP {status}" in found.last_error
    assert verify_archive(store).ok


@pytest.mark.parametrize("stored", [True, False])
def test_a_put_cut_mid_body_is_retried_to_exactly_one_object(tmp_path: Path, stored: bool) -> None:
    store = MemoryStore()
    with segwal.open(tmp_path / "log", archive=store, **FAST) as wal:
        fill(wal, 30)
        archive_everything(wal)  # the generation exists: the next PUT is a segment's
        store.cut_put(stored=stored)
        fill(wal, 30)
        archive_everything(wal)
        assert wal.archive_status().retries == 1
        sealed = [s for s in wal.segments() if s.sealed]
    assert len(segment_keys(store)) == len(sealed)
    assert verify_archive(store).ok


def test_answer_lost_then_crash_reuploads_into_an_equal_412(tmp_path: Path) -> None:
    """The PUT landed, its answer was lost, and the process stopped before META moved: the
    next open PUTs again, gets the 412, finds equal bytes, and counts it archived."""
    store = MemoryStore()
    wal = segwal.open(tmp_path / "log", archive=store, archive_close_timeout=5, **FAST)
    fill(wal, 30)
    archive_everything(wal)
    archived, before = wal.archive_status().archived_lsn, len(segment_keys(store))
    store.cut_put(stored=True)
    store.fail("put", times=10**6)
    fill(wal, 30)
    wal.rotate()
    deadline = time.monotonic() + 30
    while len(segment_keys(store)) <= before and time.monotonic() < deadline:
        time.sleep(0.01)
    wal.close()
    assert len(segment_keys(store)) == before + 1
    with segwal.open(tmp_path / "log", readonly=True) as view:
        assert view.holds()["archive"] == archived + 1  # META never heard of it
    store.clear_faults()
    with segwal.open(tmp_path / "log", archive=store, **FAST) as wal:
        archive_everything(wal)
        assert wal.archive_status().uploads == len(segment_keys(store)) - before
        sealed = [s for s in wal.segments() if s.sealed]
    assert len(segment_keys(store)) == len(sealed)
    assert verify_archive(store).ok


def test_412_with_other_bytes_stops_uploading_and_keeps_local_data(tmp_path: Path) -> None:
    store = MemoryStore()
    with segwal.open(tmp_path / "a", archive=store, **FAST) as wal:
        fill(wal, 10)
        archive_everything(wal)
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # the same log twice: two writers
    with (
        segwal.open(tmp_path / "a", archive=store, **FAST) as one,
        segwal.open(tmp_path / "b", archive=store, **FAST) as two,
    ):
        one.append(b"one says this")
        two.append(b"two says something else")
        one.rotate()
        assert one.wait_archived(one.last_lsn, timeout=30)
        two.rotate()
        with pytest.raises(segwal.ArchiveConflictError, match="another segment"):
            two.wait_archived(two.last_lsn, timeout=30)
        status = two.archive_status()
        assert status.stopped is not None and "seg/00000000000000000011.wal" in status.stopped
        two.append(b"the log itself goes on")
        assert two.read(11).payload == b"two says something else"


def test_a_prefix_of_another_log_is_refused_at_open(tmp_path: Path) -> None:
    store = MemoryStore()
    with segwal.open(tmp_path / "a", archive=store, **FAST) as wal:
        fill(wal, 5)
    with pytest.raises(segwal.ArchiveConflictError, match="another log") as caught:
        segwal.open(tmp_path / "b", archive=store, **FAST)
    assert caught.value.key == "ARCHIVE"


def test_expired_credentials_fail_at_open_and_show_later(tmp_path: Path) -> None:
    store = MemoryStore()
    store.expire_credentials()
    with pytest.raises(segwal.ArchiveAccessError, match="ExpiredToken"):
        segwal.open(tmp_path / "log", archive=store, **FAST)
    store.renew_credentials()
    with segwal.open(tmp_path / "log", archive=store, **FAST) as wal:
        store.expire_credentials()
        fill(wal, 60)
        wal.rotate()
        assert not wal.wait_archived(wal.last_lsn, timeout=0.3)
        status = wal.archive_status()
        assert "ExpiredToken" in (status.last_error or "") and status.lag_segments >= 1
        assert status.lag_bytes > 0 and status.archived_lsn < wal.last_lsn
        store.renew_credentials()
        assert wal.wait_archived(wal.last_lsn, timeout=60)


def test_a_vanished_bucket_never_stops_appends_or_retention_holds(tmp_path: Path) -> None:
    store = MemoryStore()
    with segwal.open(
        tmp_path / "log", archive=store, retention_max_bytes=3 * SEGMENT, **FAST
    ) as wal:
        store.drop_bucket()
        fill(wal, 400)
        wal.rotate()
        wal.apply_retention()
        assert wal.first_lsn == 1  # nothing archived, so nothing deleted
        assert "NoSuchBucket" in (wal.archive_status().last_error or "")


def test_retention_deletes_only_archived_segments(tmp_path: Path) -> None:
    store = MemoryStore()
    with segwal.open(
        tmp_path / "log", archive=store, retention_max_bytes=3 * SEGMENT, **FAST
    ) as wal:
        store.fail("put", times=10**6)
        fill(wal, 400)
        wal.apply_retention()
        assert wal.first_lsn == 1
        store.clear_faults()  # the store comes back
        archive_everything(wal)
        wal.apply_retention()
        assert wal.first_lsn > 1
        assert all(s.last_lsn <= wal.archive_status().archived_lsn for s in wal.segments()[:-1])


def test_a_conditional_write_ignoring_store_is_refused(tmp_path: Path) -> None:
    store = MemoryStore()
    store.ignore_conditions = True
    with pytest.raises(segwal.ArchiveAccessError, match="conditional writes ignored"):
        segwal.open(tmp_path / "log", archive=store, **FAST)


def test_a_store_down_at_open_does_not_stop_the_log(tmp_path: Path) -> None:
    store = MemoryStore()
    for op in ("put", "get", "head", "list", "delete"):
        store.fail(op, times=10**6)
    with segwal.open(tmp_path / "log", archive=store, **FAST) as wal:
        fill(wal, 50)
        assert wal.read(50).payload == payload(50, 100)
        assert wal.archive_status().last_error is not None


def test_close_waits_a_bounded_time_on_a_slow_store(tmp_path: Path) -> None:
    store = MemoryStore()
    with segwal.open(tmp_path / "log", archive=store, archive_close_timeout=0.2, **FAST) as wal:
        fill(wal, 40)
        store.latency = 30.0
        wal.rotate()
        time.sleep(0.1)  # the uploader is inside a 30 s request now
        started = time.monotonic()
    assert time.monotonic() - started < 10  # bounded by archive_close_timeout, not 30 s


def test_a_quiet_log_reaches_the_archive_by_segment_age(tmp_path: Path) -> None:
    store = MemoryStore()
    with segwal.open(tmp_path / "log", archive=store, archive_max_segment_age=0.2, **FAST) as wal:
        wal.append(b"lonely")
        assert wal.wait_archived(1, timeout=30)
        assert wal.segments()[0].sealed


def test_rewind_below_the_archive_starts_a_new_generation(tmp_path: Path) -> None:
    store = MemoryStore()
    with segwal.open(tmp_path / "log", archive=store, **FAST) as wal:
        fill(wal, 200)
        archive_everything(wal)
        first = wal.archive_status().generation
        wal.truncate_after(120)
        wal.append(b"after the rewind")
        archive_everything(wal)
        second = wal.archive_status().generation
    assert first != second and second is not None
    listing = read_listing(store)
    assert listing.generations[second].parent == first
    assert verify_archive(store).ok
    restored = segwal.restore(store, tmp_path / "new")
    assert restored.generation == second and restored.last_lsn == 121
    with segwal.open(restored.path, readonly=True) as log:
        assert log.read(121).payload == b"after the rewind"
        assert log.read(120).payload == payload(120, 100)
    old = segwal.restore(store, tmp_path / "old", generation=first)
    assert old.last_lsn == 200


def test_a_rewind_while_not_archiving_is_noticed_at_open(tmp_path: Path) -> None:
    store = MemoryStore()
    with segwal.open(tmp_path / "log", archive=store, **FAST) as wal:
        fill(wal, 100)
        archive_everything(wal)
        first = wal.archive_status().generation
    with segwal.open(tmp_path / "log") as plain:
        plain.truncate_after(50)
        plain.append(b"other history")
    with segwal.open(tmp_path / "log", archive=store, **FAST) as wal:
        archive_everything(wal)
        assert wal.archive_status().generation != first
    assert verify_archive(store).ok
    assert segwal.restore(store, tmp_path / "r").last_lsn == 51


def test_state_file_is_beside_the_log(tmp_path: Path) -> None:
    with segwal.open(tmp_path / "log", archive=MemoryStore(), **FAST):
        pass
    assert "ARCHIVE.state" in os.listdir(tmp_path / "log")
