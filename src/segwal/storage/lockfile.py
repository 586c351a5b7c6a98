"""The LOCK file: the writer lock, and what the writer publishes to readers in it.

The bytes are ``format.lock``'s. The file is never fsynced: what it says is a hint for
live readers in other processes, never read by recovery.
"""

from __future__ import annotations

import os
import posixpath
from time import monotonic

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


class LockWatch:
    """LOCK's bytes for a readonly view, through one handle kept open: a look before each
    read costs one ``pread`` instead of open, fstat, pread and close.

    segwal never replaces or deletes LOCK (writers ``pwrite`` it in place), so the open
    handle sees every change. Should something else replace the file, the handle is opened
    again at least every ``REOPEN_SECONDS``, and at each look while LOCK is missing.
    """

    REOPEN_SECONDS = 1.0

    def __init__(self, fs: FileSystem, directory: str) -> None:
        self._fs = fs
        self._path = posixpath.join(directory, LOCK_NAME)
        self._handle: FileHandle | None = None
        self._opened = 0.0
        self._closed = False

    def read(self) -> bytes | None:
        """LOCK's bytes as they are now (None: no LOCK). The caller serialises calls."""
        handle = self._handle
        if handle is None or monotonic() - self._opened >= self.REOPEN_SECONDS:
            self._let_go()
            if self._closed:
                return None
            try:
                handle = self._handle = self._fs.open_read(self._path)
            except OSError:
                return None
            self._opened = monotonic()
        return handle.pread(lock.SIZE, 0)

    def close(self) -> None:
        self._closed = True
        self._let_go()

    def _let_go(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
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
