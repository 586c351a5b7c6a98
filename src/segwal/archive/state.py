"""The archiver's small state file in the log directory, ``ARCHIVE.state``.

The archived LSN itself lives in META, as the ``archive`` hold (written by the log's own
atomic META replace), so it and the hold that keeps unarchived segments can never disagree.
This file holds what META has no field for: the URL, the current generation (or the
parent and fork LSN of the one the next upload starts), the highest LSN ever put in flight
in this generation (a PUT whose answer was lost counts: its bytes may be in the store), and
the log's rewind count when this was last written, so a ``truncate_after`` run while the
archiver was not running is noticed at the next open, and, for an encrypted log, the digest
of the ``KEYS`` last uploaded (a rewrap or a new log key changes it, and is uploaded).

Replaced whole: temp file, fsync, rename, fsync of the directory (a crash leaves the old
file or the new one), through the log's file system (``Wal.filesystem``), so the crash-state
enumeration with the in-memory file system covers it. Written before every PUT that raises
``in_flight``.
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import asdict, dataclass
from typing import Final

from segwal.errors import CorruptionError
from segwal.format import naming
from segwal.log.sidefiles import FileSystem, read_small, replace_small
from segwal.log.wal import Wal

STATE_NAME: Final = naming.ARCHIVE_STATE_NAME
MAX_STATE_BYTES: Final = 1 << 16


@dataclass(slots=True, kw_only=True)
class UploadState:
    url: str
    generation: str | None  # None: the next upload starts a new generation
    parent: str | None  # the parent of the generation (to be) started
    fork_lsn: int  # LSNs up to here come from the parent
    in_flight: int  # the highest LSN ever sent to this generation (or fork_lsn)
    rewinds: int  # the log's rewind count when this was written
    keys: str | None = None  # digest of the KEYS last uploaded (``keys/<digest>.keys``)


def load_state(directory: str, fs: FileSystem | None = None) -> UploadState | None:
    """The ``ARCHIVE.state`` of ``directory`` (read through ``fs``, the log's file system),
    or None when there is none."""
    path = posixpath.join(directory, STATE_NAME)
    raw = read_small(fs, path, MAX_STATE_BYTES)
    if raw is None:
        return None
    try:
        body = json.loads(raw)
        state = UploadState(**body)
        if (
            not isinstance(state.url, str)
            or type(state.in_flight) is not int
            or not isinstance(state.keys, str | None)
        ):
            raise TypeError("fields")
    except (ValueError, TypeError):
        raise CorruptionError(f"{STATE_NAME} is unreadable", path=path, offset=0) from None
    return state


def store_state(directory: str, state: UploadState, fs: FileSystem | None = None) -> None:
    """Replace ``ARCHIVE.state`` through ``fs`` (the log's file system, so the crash-state
    enumeration covers it): temp file, fsync (barrier ``archive.sync``), rename, directory
    fsync (``archive.rename``). The temp name carries the pid: ``segwal archive push``
    beside a live writer must not collide with it."""
    replace_small(
        fs,
        directory,
        STATE_NAME,
        json.dumps(asdict(state), sort_keys=True).encode(),
        temp_name=f"{STATE_NAME}.{os.getpid()}.tmp",
        sync=lambda handle: handle.sync("archive.sync"),
        sync_dir=lambda files: files.sync_dir(directory, "archive.rename"),
    )


def write_atomic(directory: str, name: str, data: bytes, *, temp_name: str | None = None) -> None:
    """Replace ``directory/name`` durably: the data is fsynced before the rename (so the
    new name never points at unwritten bytes), the directory after it (so the rename
    survives a power loss). The temp file is ``{name}.{pid}.tmp`` (``format.naming`` knows
    it) unless ``temp_name`` is given."""
    write_whole(directory, name, data, temp_name=temp_name or f"{name}.{os.getpid()}.tmp")
    sync_dir(directory)


def write_whole(directory: str, name: str, data: bytes, *, temp_name: str) -> None:
    """Write ``data`` to ``temp_name``, fsync it, rename it to ``name``: a file of that name
    is always whole. The caller fsyncs the directory when the name must survive a crash
    (once per file, or once after many)."""
    path = os.path.join(directory, name)
    temp = os.path.join(directory, temp_name)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:  # os.write may write less than asked
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)


def sync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Position:
    """Where the archived LSN is kept: the ``archive`` hold of a writable log (META), or a
    consumer cursor beside a live writer (``segwal archive push``)."""

    def __init__(self, wal: Wal, *, cursor: bool) -> None:
        self._wal = wal
        self._cursor = wal.cursor("archive", start=wal.first_lsn) if cursor else None

    def load(self) -> int:
        if self._cursor is not None:
            return self._cursor.position - 1
        hold = self._wal.holds().get("archive")
        return self._wal.first_lsn - 1 if hold is None else hold - 1

    def save(self, lsn: int) -> None:
        if self._cursor is not None:
            self._cursor.commit(lsn)
        else:
            self._wal.hold("archive", lsn + 1)
