"""Crash states of the archive's steps (issue 12, docs/DURABILITY.md "Archive"): a writer
archives to the memory store on the in-memory crashable file system, with ``ARCHIVE.state``
going through the log's file system like META; it is cut by a power loss after every
operation, and every disk image the fault model allows (``MemoryFileSystem.crash_states``)
is recovered against the store as it was at that instant (the PUTs noted before it).

The workload: appends (each acknowledged with sync="always"), uploads, retention that
deletes what the archive holds, a close and reopen, and a rewind below what was uploaded
(a new generation). At every crash image:

- nothing unarchived was deleted: the LSNs below the local log's first are all in the
  store;
- the uploader resumes there, then at once rewinds to just past its archived LSN (so a
  lost in-flight mark would let it reuse a name the store already holds with other bytes),
  appends and uploads: no conflict, the archive verifies, and the newest generation holds
  exactly one object per local sealed segment, byte for byte.

Skipping either barrier of ``ARCHIVE.state`` (``archive.sync``, ``archive.rename``) breaks
this, so both are load-bearing.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

import segwal
from segwal.archive.catalog import read_listing
from segwal.archive.memory import MemoryStore
from segwal.archive.objects import parse_segment_key
from segwal.archive.uploader import Uploader
from segwal.testing import MemoryFileSystem

PATH = "/log"
SEGMENT_BYTES = 512
IMAGES_PER_POINT = 3


class NotingStore(MemoryStore):
    """The memory store; every conditional create is noted in the file system's operation
    log once the store holds it, so the store at any crash point is known."""

    def __init__(self, fs: MemoryFileSystem) -> None:
        super().__init__()
        self.fs = fs

    def put_if_absent(
        self, key: str, data: bytes, metadata: Mapping[str, str] | None = None
    ) -> bool:
        done = super().put_if_absent(key, data, metadata)
        self.fs.note("put", (key, data, dict(metadata or {})))
        return done


def store_at(state: MemoryFileSystem) -> MemoryStore:
    """The store as it was when ``state``'s operations had run."""
    store = MemoryStore()
    for key, data, metadata in state.notes("put"):  # type: ignore[misc]
        store.put_if_absent(key, data, metadata)
    return store


def _open(fs: MemoryFileSystem) -> segwal.Wal:
    return segwal.open(
        PATH,
        filesystem=fs,
        segment_bytes=SEGMENT_BYTES,
        retention_max_bytes=2 * SEGMENT_BYTES,
        sync="always",
    )


def _payload(n: int, tag: bytes = b"") -> bytes:
    return b"record %04d " % n + tag + bytes(60 + n % 30)


def workload(fs: MemoryFileSystem) -> None:
    store = NotingStore(fs)
    wal = _open(fs)
    uploader = Uploader(wal, store)
    count = 0

    def add(n: int, tag: bytes = b"") -> None:
        nonlocal count
        for _ in range(n):
            count += 1
            fs.mark_ack(wal.append(_payload(count, tag)))

    add(10)
    uploader.run_once()
    add(10)
    wal.rotate()
    uploader.run_once()
    wal.apply_retention()
    wal.close()
    wal = _open(fs)
    uploader = Uploader(wal, store)  # resumes from ARCHIVE.state and the hold
    add(6)
    wal.rotate()
    uploader.run_once()
    cut = max(wal.first_lsn, wal.last_lsn - 4)  # below what was uploaded: a new generation
    with uploader.busy:
        wal.truncate_after(cut)
        uploader.rewound(cut)
    fs.note("rewind", cut)
    add(6, b"v2")
    wal.rotate()
    uploader.run_once()
    wal.apply_retention()
    wal.close()


def _covered(store: MemoryStore) -> int:
    """The highest LSN n such that the store's segments (any generation) hold 1..n."""
    ranges = sorted(
        (key[1], int(store.objects[k].metadata["last-lsn"]))
        for k in store.objects
        if (key := parse_segment_key(k)) is not None
    )
    upto = 0
    for first, last in ranges:
        if first <= upto + 1:
            upto = max(upto, last)
    return upto


def _recover(image: MemoryFileSystem, store: MemoryStore) -> str | None:
    try:
        wal = _open(image)
    except segwal.SegwalError as exc:
        return f"reopen raised {exc!r}"
    try:
        if wal.first_lsn > 1 and _covered(store) < wal.first_lsn - 1:
            return (
                f"LSNs {_covered(store) + 1}..{wal.first_lsn - 1} were deleted locally and "
                "are not in the store"
            )
        uploader = Uploader(wal, store)
        hold = wal.holds()["archive"]
        cut = min(hold, wal.last_lsn - 1) if wal.last_lsn > hold else wal.last_lsn - 1
        if cut >= wal.first_lsn - 1:
            with uploader.busy:
                wal.truncate_after(cut)
                uploader.rewound(cut)
        for n in range(5):
            wal.append(_payload(1000 + n, b"after"))
        wal.rotate()
        uploader.run_once()
        report = segwal.verify_archive(store)
        if not report.ok:
            return f"archive verify: {report.problems[:2]}"
        listing = read_listing(store)
        newest = next(reversed(listing.generations))
        chain = {s.first_lsn: s.key for s in listing.chain(newest)}
        local = [s for s in wal.segments() if s.sealed and s.record_count]
        for info in local:
            key = chain.get(info.first_lsn)
            handle = image.open_read(info.path)
            try:
                data = handle.pread(handle.size(), 0)
            finally:
                handle.close()
            if key is None or store.objects[key].data != data:
                return f"local segment {info.first_lsn} is not the newest chain's object"
        extra = [f for f in chain if f >= wal.first_lsn and f not in {s.first_lsn for s in local}]
        if extra:
            return f"objects in the chain for no local segment: {extra}"
    except segwal.SegwalError as exc:
        return f"after reopening: {exc!r}"
    finally:
        wal.close()
    return None


def enumerate_crashes(skip: tuple[str, ...] = ()) -> tuple[list[str], int]:
    fs = MemoryFileSystem(skip_sync_sites=skip)
    workload(fs)
    problems: list[str] = []
    checked = 0
    for k, state in fs.replays():
        for image in state.crash_states(seed=k, limit=IMAGES_PER_POINT, random_subsets=4):
            checked += 1
            problem = _recover(image, store_at(state))
            if problem is not None:
                problems.append(f"op {k}: {problem}")
    return problems, checked


def test_every_crash_of_an_archiving_writer_loses_nothing_and_conflicts_never() -> None:
    problems, checked = enumerate_crashes()
    assert checked > 500
    assert not problems, problems[:5]


@pytest.mark.parametrize("site", ["archive.sync", "archive.rename"])
def test_skipping_an_archive_state_barrier_breaks_the_promise(site: str) -> None:
    problems, _ = enumerate_crashes(skip=(site,))
    assert problems, f"skipping {site} broke nothing: the enumeration has a blind spot"
