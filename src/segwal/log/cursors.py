"""Named consumer cursors: a position per consumer, kept in its own small file.

A cursor file ``cursor.{name}`` holds the next LSN its consumer will read (and the log's
rewind count at the commit; the bytes are ``format.cursor``'s). Consumers commit it from
any process (a readonly open included) without touching the log's own files; the writer
reads every cursor file when it decides retention, so a cursor is a hold: records at or
above its position stay until the consumer has read them. A file is replaced whole
through ``storage.replace`` (temp file, fdatasync, rename, directory fsync).
"""

from __future__ import annotations

import errno
import os
import posixpath
from collections.abc import Iterator
from typing import Final, Protocol

from segwal.errors import ConfigError, StorageError
from segwal.format import cursor as layout
from segwal.format.meta import check_hold_name
from segwal.format.naming import CURSOR_PREFIX
from segwal.storage.fileio import FileSystem
from segwal.storage.replace import read_file, replace_file
from segwal.types import Batch, Record

HOLD_PREFIX: Final = "cursor:"


def _path(directory: str, name: str) -> str:
    return posixpath.join(directory, CURSOR_PREFIX + name)


def load(fs: FileSystem, directory: str, name: str) -> layout.CursorFile | None:
    """The stored cursor ``name``, or None when it does not exist."""
    path = _path(directory, name)
    raw = read_file(fs, path, layout.MAX_SIZE)
    return None if raw is None else layout.decode(raw, path)


def store(fs: FileSystem, directory: str, name: str, position: int, rewinds: int) -> None:
    """Replace cursor ``name``'s file atomically and durably."""
    path = _path(directory, name)
    replace_file(
        fs,
        path,
        layout.encode(position, rewinds),
        # A per-process temp name: consumers in several processes never collide.
        temp=f"{path}.{os.getpid()}.tmp",
        # The position must be durable before the name points at it; a committed position
        # must survive, or a consumer would read records twice.
        sync=lambda handle: handle.sync("cursor.sync"),
        sync_dir=lambda: fs.sync_dir(directory, "cursor.rename"),
    )


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
            stored = load(fs, directory, name)
            if stored is not None:
                found[name] = stored.position
    return found


class CursorHost(Protocol):
    """What a cursor needs of its log (``Wal`` provides it); a cursor knows nothing else."""

    def read_batch(self, from_lsn: int, *, max_records: int, max_bytes: int) -> Batch: ...

    def follow(self, from_lsn: int, *, timeout: float | None) -> Iterator[Record]: ...

    def _commit_cursor(self, name: str, position: int) -> int: ...

    def _delete_cursor(self, name: str) -> bool: ...

    def _check_cursor(self, name: str, position: int, rewinds: int) -> None: ...


class Cursor:
    """A named consumer position that survives restarts and keeps its records.

    ``position`` is the next LSN to read. Read with ``read_batch`` or ``follow``, then
    ``commit(lsn)`` once records up to ``lsn`` are processed (each commit costs two barriers:
    commit every batch, not every record).
    """

    def __init__(self, wal: CursorHost, name: str, position: int, rewinds: int) -> None:
        self._wal = wal
        self.name = name
        self.position = position
        self._rewinds = rewinds  # the log's rewind count when the position was committed

    def __repr__(self) -> str:
        return f"<segwal.Cursor {self.name!r} at LSN {self.position}>"

    def read_batch(self, *, max_records: int = 1000, max_bytes: int = 1 << 20) -> Batch:
        """The next page of records from the cursor's position (the position does not move).

        ReaderFellBehindError when the log was rewound below the position since it was
        committed: the records the consumer processed there were replaced (commit the
        cursor at the LSN the error names to read on).
        """
        self._wal._check_cursor(self.name, self.position, self._rewinds)
        return self._wal.read_batch(self.position, max_records=max_records, max_bytes=max_bytes)

    def follow(self, *, timeout: float | None = None) -> Iterator[Record]:
        """Records from the cursor's position as they become durable."""
        self._wal._check_cursor(self.name, self.position, self._rewinds)
        return self._wal.follow(self.position, timeout=timeout)

    def commit(self, lsn: int) -> None:
        """Records up to ``lsn`` are processed: the next read starts at ``lsn + 1``."""
        self._rewinds = self._wal._commit_cursor(self.name, lsn + 1)
        self.position = lsn + 1

    def delete(self) -> bool:
        """Forget the cursor and release its hold."""
        return self._wal._delete_cursor(self.name)


def check_name(name: object) -> str:
    """Cursor names follow the hold name rules, and do not end in ``.tmp`` (the temp name
    of a commit, which opening the log removes as a leftover)."""
    name = check_hold_name(name)
    if name.endswith(".tmp"):
        raise ConfigError(f"invalid cursor name {name!r}: it may not end in .tmp", option="name")
    return name
