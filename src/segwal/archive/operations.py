"""Operator actions on a log directory: ``push`` (archive a log not opened with
``archive=``) and the archive status a directory shows without asking the store."""

from __future__ import annotations

import time

from segwal.archive.state import load_state
from segwal.archive.store import ObjectStore
from segwal.archive.uploader import ArchiveStatus, Uploader
from segwal.errors import ArchiveError, ArchiveNotFoundError, ArchiveUnavailableError
from segwal.log.config import WalConfig
from segwal.log.wal import Wal


def push(directory: str, store: ObjectStore) -> ArchiveStatus:
    """Upload every sealed segment of the log in ``directory`` not yet archived, once.

    The log is opened readonly, so this runs beside a live writer; its place is the
    consumer cursor ``archive``, which holds the writer's retention until it is archived.
    Raises the first store error after retries (the status says how far it got)."""
    wal = Wal(directory, WalConfig(readonly=True))
    try:
        uploader = Uploader(wal, store, cursor=True)
        delay = uploader.base_delay
        for attempt in range(6):
            try:
                uploader.run_once()
                break
            except ArchiveError as exc:
                uploader.record_error(exc)
                if attempt == 5 or not isinstance(exc, ArchiveUnavailableError):
                    raise
                time.sleep(delay)
                delay *= 2
        return uploader.status()
    finally:
        wal.close()


def local_status(directory: str) -> ArchiveStatus:
    """What the directory says of its archive (``ARCHIVE.state`` and the archive hold or
    cursor), without contacting the store."""
    state = load_state(directory)
    if state is None:
        raise ArchiveNotFoundError(f"{directory} has never been archived (no ARCHIVE.state)")
    with Wal(directory, WalConfig(readonly=True)) as wal:
        holds = wal.holds()
        position = holds.get("archive", holds.get("cursor:archive", wal.first_lsn))
        archived = position - 1
        pending = [s for s in wal.segments() if s.last_lsn > archived and s.record_count]
        sealed = [s for s in pending if s.sealed]
        oldest = 0.0
        if pending:
            first = pending[0]
            stamp = first.min_timestamp_us if first.sealed else first.created_us
            oldest = max(0.0, time.time() - stamp / 1e6)
        return ArchiveStatus(
            url=state.url,
            generation=state.generation,
            archived_lsn=archived,
            last_lsn=wal.last_lsn,
            lag_segments=len(sealed),
            lag_bytes=sum(s.size_bytes for s in sealed),
            lag_seconds=oldest,
            uploads=0,
            uploaded_bytes=0,
            retries=0,
            last_error=None,
            last_error_at=None,
            stopped=None,
            running=False,
        )
