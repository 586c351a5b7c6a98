"""The LOCK file: the writer lock, and what the writer publishes to readers in it.

The bytes are ``format.lock``'s. The file is never fsynced: what it says is a hint for
live readers in other processes, never read by recovery.
"""

from __future__ import annotations

import os
import posixpath

from segwal.errors import LockError
from segwal.format import lock
from segwal.format.naming import LOCK_NAME
from segwal.storage.fileio import FileHandle, FileSystem


def take_lock(fs: FileSystem, directory: str) -> FileHandle:
    """Take the writer lock and publish this process's pid in it."""
    path = posixpath.join(directory, LOCK_NAME)
    handle = fs.lock(path, exclusive=True)
    if handle is None:
        found = read_lock(fs, directory)
        raise LockError(directory, found.pid if found is not None else None)
    try:
        publish_durable(handle, 0, 0)
    except BaseException:
        handle.close()  # or the lock stays held and every later open gets LockError
        raise
    return handle


def publish_durable(
    handle: FileHandle,
    durable_lsn: int,
    rewinds: int,
    counters: tuple[int, ...] = lock.NO_COUNTERS,
    *,
    closed: bool = False,
) -> None:
    """Tell readers in other processes how far the log is durable, how often it was rewound
    and the writer's counters (one ``pwrite``, no barrier needed).

    A closed log publishes pid 0: everything in its files is durable. Otherwise readers trust
    only the published durable LSN, whether the writer is alive or was killed.
    """
    pid = 0 if closed else os.getpid()
    handle.pwrite(lock.encode(pid, durable_lsn, rewinds, counters), 0)


def read_lock(fs: FileSystem, directory: str) -> lock.Published | None:
    """What a writer published (pid 0: closed), or None when unreadable."""
    path = posixpath.join(directory, LOCK_NAME)
    for _attempt in range(100):
        try:
            handle = fs.open_read(path)
        except OSError:
            return None
        try:
            raw = handle.pread(lock.SIZE, 0)
        finally:
            handle.close()
        if len(raw) < lock.LAYOUT.size or raw[:8] != lock.MAGIC:
            return None
        found = lock.decode(raw)
        if found is not None:
            return found
        # A torn read of a concurrent update: read again.
    return None
