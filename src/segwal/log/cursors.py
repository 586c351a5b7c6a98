"""Named consumer cursors: a position per consumer, kept in its own small file.

A cursor file ``cursor.{name}`` holds the next LSN its consumer will read. Consumers commit
it from any process (a readonly open included) without touching the log's own files; the
writer reads every cursor file when it decides retention, so a cursor is a hold: records
at or above its position stay until the consumer has read them.

Layout (little-endian): magic ``b"SWCUR001"`` (8), position u64 (8), CRC32C of the first
16 bytes (4). Replaced whole: temp file, fdatasync, rename, directory fsync.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import struct
from collections.abc import Iterator
from typing import Final, Protocol

from segwal.errors import CorruptionError, StorageError
from segwal.format.layout import crc32c
from segwal.format.naming import CURSOR_PREFIX
from segwal.storage.fileio import FileSystem
from segwal.storage.meta import check_hold_name
from segwal.types import Batch, Record

_LAYOUT = struct.Struct("<8sQ")
_CRC = struct.Struct("<I")
_MAGIC: Final = b"SWCUR001"
HOLD_PREFIX: Final = "cursor:"


def _path(directory: str, name: str) -> str:
    return posixpath.join(directory, CURSOR_PREFIX + name)


def load(fs: FileSystem, directory: str, name: str) -> int | None:
    """The stored position of cursor ``name``, or None when it does not exist."""
    path = _path(directory, name)
    try:
        handle = fs.open_read(path)
    except StorageError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    try:
        raw = handle.pread(_LAYOUT.size + _CRC.size + 1, 0)
    finally:
        handle.close()
    if (
        len(raw) != _LAYOUT.size + _CRC.size
        or crc32c(raw[: _LAYOUT.size]) != _CRC.unpack_from(raw, _LAYOUT.size)[0]
    ):
        raise CorruptionError("cursor file is damaged", path=path, offset=0)
    magic, position = _LAYOUT.unpack_from(raw)
    if magic != _MAGIC or position < 1:
        raise CorruptionError("not a segwal cursor file", path=path, offset=0)
    return int(position)


def store(fs: FileSystem, directory: str, name: str, position: int) -> None:
    """Replace cursor ``name``'s file atomically and durably."""
    path = _path(directory, name)
    # A per-process temp name: consumers in several processes never collide.
    temp = f"{path}.{os.getpid()}.tmp"
    with contextlib.suppress(OSError):
        fs.unlink(temp)
    handle = fs.create(temp)
    try:
        raw = _LAYOUT.pack(_MAGIC, position)
        handle.pwrite(raw + _CRC.pack(crc32c(raw)), 0)
        # The position must be durable before the name points at it.
        handle.sync("cursor.sync")
    finally:
        handle.close()
    fs.rename(temp, path)
    # A committed position must survive, or a consumer would read records twice.
    fs.sync_dir(directory, "cursor.rename")


def remove(fs: FileSystem, directory: str, name: str) -> bool:
    """Delete cursor ``name``; False when it did not exist."""
    try:
        fs.unlink(_path(directory, name))
    except StorageError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    fs.sync_dir(directory, "cursor.unlink")
    return True


def load_all(fs: FileSystem, directory: str) -> dict[str, int]:
    """Every cursor of the log: name -> position."""
    found = {}
    for entry in fs.list_dir(directory):
        if entry.name.startswith(CURSOR_PREFIX) and not entry.name.endswith(".tmp"):
            name = entry.name[len(CURSOR_PREFIX) :]
            position = load(fs, directory, name)
            if position is not None:
                found[name] = position
    return found


class CursorHost(Protocol):
    """What a cursor needs of its log (``Wal`` provides it); a cursor knows nothing else."""

    def read_batch(self, from_lsn: int, *, max_records: int, max_bytes: int) -> Batch: ...

    def follow(self, from_lsn: int, *, timeout: float | None) -> Iterator[Record]: ...

    def _commit_cursor(self, name: str, position: int) -> None: ...

    def _delete_cursor(self, name: str) -> bool: ...


class Cursor:
    """A named consumer position that survives restarts and keeps its records.

    ``position`` is the next LSN to read. Read with ``read_batch`` or ``follow``, then
    ``commit(lsn)`` once records up to ``lsn`` are processed (each commit costs two barriers:
    commit every batch, not every record).
    """

    def __init__(self, wal: CursorHost, name: str, position: int) -> None:
        self._wal = wal
        self.name = name
        self.position = position

    def __repr__(self) -> str:
        return f"<segwal.Cursor {self.name!r} at LSN {self.position}>"

    def read_batch(self, *, max_records: int = 1000, max_bytes: int = 1 << 20) -> Batch:
        """The next page of records from the cursor's position (the position does not move)."""
        return self._wal.read_batch(self.position, max_records=max_records, max_bytes=max_bytes)

    def follow(self, *, timeout: float | None = None) -> Iterator[Record]:
        """Records from the cursor's position as they become durable."""
        return self._wal.follow(self.position, timeout=timeout)

    def commit(self, lsn: int) -> None:
        """Records up to ``lsn`` are processed: the next read starts at ``lsn + 1``."""
        self._wal._commit_cursor(self.name, lsn + 1)
        self.position = lsn + 1

    def delete(self) -> bool:
        """Forget the cursor and release its hold."""
        return self._wal._delete_cursor(self.name)


def check_name(name: object) -> str:
    """Cursor names follow the hold name rules."""
    return check_hold_name(name)
