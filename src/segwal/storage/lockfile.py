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

# This process's pid, read once (and again in a forked child): getpid is a system call, and
# publishing runs once per fdatasync.
_pid = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))


def take_lock(fs: FileSystem, directory: str) -> FileHandle:
    """Take the writer lock and publish this process's pid in it."""
    path = posixpath.join(directory, LOCK_NAME)
    handle = fs.lock(path, exclusive=True)
    if handle is None:
        found = read_lock(fs, directory)
        raise LockError(directory, found.pid if found is not None else None)
    try:
        # Continue the generation the last writer left (see format/lock.py): this open is a
        # change, and no two sessions may publish the same bytes.
        previous = lock.decode(handle.pread(lock.SIZE, 0))
        generation = (previous.generation or 0) + 1 if previous is not None else 1
        publish_durable(handle, 0, 0, generation=generation)
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
    generation: int = 0,
) -> None:
    """Tell readers in other processes how far the log is durable, how often it was rewound
    and the writer's counters (one ``pwrite``, no barrier needed).

    A closed log publishes pid 0: everything in its files is durable. Otherwise readers trust
    only the published durable LSN, whether the writer is alive or was killed.
    """
    pid = 0 if closed else _pid[0]
    handle.pwrite(lock.encode(pid, durable_lsn, rewinds, counters, generation), 0)


def generation_of(handle: FileHandle) -> int:
    """The generation the writer holding ``handle`` published at ``take_lock``."""
    found = lock.decode(handle.pread(lock.SIZE, 0))
    return found.generation or 1 if found is not None else 1


def read_raw(fs: FileSystem, directory: str) -> bytes | None:
    """LOCK's bytes as they are now (None: no LOCK): what a readonly view compares to know
    whether the writer changed anything since it last looked."""
    try:
        handle = fs.open_read(posixpath.join(directory, LOCK_NAME))
    except OSError:
        return None
    try:
        return handle.pread(lock.SIZE, 0)
    finally:
        handle.close()


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
