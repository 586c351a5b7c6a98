"""The LOCK file: the writer lock, and the durable LSN the writer publishes to readers.

Layout (little-endian, 32 bytes at offset 0): magic ``b"SWLOCK01"`` (8), pid u64 (8; 0 when
the log was closed cleanly), durable LSN u64 (8), the durable LSN's bitwise complement u64
(8), so a reader can tell a torn read of a concurrent update from a published value. The
file is never fsynced: what it says is a hint for live readers, never read by recovery.
"""

from __future__ import annotations

import os
import posixpath
import struct

from segwal.errors import LockError
from segwal.format.naming import LOCK_NAME
from segwal.storage.fileio import FileHandle, FileSystem

LOCK_LAYOUT = struct.Struct("<8sQQQ")
LOCK_MAGIC = b"SWLOCK01"
_MASK = (1 << 64) - 1


def take_lock(fs: FileSystem, directory: str) -> FileHandle:
    """Take the writer lock and publish this process's pid in it."""
    path = posixpath.join(directory, LOCK_NAME)
    handle = fs.lock(path, exclusive=True)
    if handle is None:
        raise LockError(directory, read_lock(fs, directory)[0])
    try:
        publish_durable(handle, 0)
    except BaseException:
        handle.close()  # or the lock stays held and every later open gets LockError
        raise
    return handle


def publish_durable(handle: FileHandle, durable_lsn: int, *, closed: bool = False) -> None:
    """Tell readers in other processes how far the log is durable (no barrier needed).

    A closed log publishes pid 0: everything in its files is durable. Otherwise readers trust
    only the published durable LSN, whether the writer is alive or was killed.
    """
    pid = 0 if closed else os.getpid()
    handle.pwrite(LOCK_LAYOUT.pack(LOCK_MAGIC, pid, durable_lsn, ~durable_lsn & _MASK), 0)


def read_lock(fs: FileSystem, directory: str) -> tuple[int | None, int | None]:
    """The (pid, durable LSN) a writer published (pid 0: closed), or Nones when unreadable."""
    path = posixpath.join(directory, LOCK_NAME)
    for _attempt in range(100):
        try:
            handle = fs.open_read(path)
        except OSError:
            return None, None
        try:
            raw = handle.pread(LOCK_LAYOUT.size, 0)
        finally:
            handle.close()
        if len(raw) < LOCK_LAYOUT.size:
            return None, None
        magic, pid, durable, check = LOCK_LAYOUT.unpack(raw)
        if magic != LOCK_MAGIC:
            return None, None
        if check == ~durable & _MASK:
            return pid, durable
        # A torn read of a concurrent update: read again.
    return None, None
