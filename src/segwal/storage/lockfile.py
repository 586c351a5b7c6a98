"""The LOCK file: the writer lock, and what the writer publishes to readers in it.

The bytes are ``format.lock``'s. The file is never fsynced: what it says is a hint for
live readers in other processes, never read by recovery. Since 0.4 the writer publishes
by storing into a shared mapping of the file and readonly views look through one, so
neither costs a system call (docs/FORMAT.md, "LOCK mapping"); where the file system cannot
map, both fall back to ``pwrite`` and ``pread``.
"""

from __future__ import annotations

import os
import posixpath
import threading
from time import monotonic, sleep
from typing import Any

from segwal.errors import LockError, StorageError
from segwal.format import lock
from segwal.format.naming import LOCK_NAME
from segwal.storage.fileio import Buffer, FileHandle, FileSystem, Mappable, OsSharedMap, SharedMap

# This process's pid, read once (and again in a forked child): getpid is a system call, and
# publishing runs once per fdatasync.
_pid = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))

# A reader's tries at a consistent copy before it yields its CPU to the writer (a
# publication takes about a microsecond).
_TRIES = 20


def _map(handle: FileHandle, *, writable: bool) -> SharedMap | None:
    """LOCK's first ``MAPPED_SIZE`` bytes mapped shared, or None (pwrite and pread then)."""
    if not isinstance(handle, Mappable):
        return None  # a FileSystem from before 0.4, passed to segwal.open
    try:
        return handle.map_shared(lock.MAPPED_SIZE, writable=writable)
    except StorageError:
        return None  # shorter than the mapping (an older writer's), or no mmap here


class LockHandle:
    """The writer's LOCK: the handle that holds the lock, and the file's first bytes mapped
    shared, through which each publication is three stores instead of a ``pwrite``.

    A publication (a seqlock write): the sequence word turns odd, the 116 published bytes
    are stored, the sequence turns even and larger. Publications are serialised here (a
    barrier's leader and ``close`` may publish from different threads).
    """

    __slots__ = ("_handle", "_map", "_mutex", "_sequence")

    def __init__(self, handle: FileHandle, sequence: int) -> None:
        self._handle = handle
        self._sequence = sequence  # even: the value the file holds now
        self._mutex = threading.Lock()
        self._map = _map(handle, writable=True)

    @property
    def path(self) -> str:
        return self._handle.path

    @property
    def mapped(self) -> bool:
        return self._map is not None

    def publish(self, raw: bytes) -> None:
        """Make ``raw`` (``lock.encode``'s bytes) what LOCK says at offset 0."""
        # The lock also guards against close: never a store into a closed mapping. Taken
        # without a context manager's two calls: this runs once per barrier.
        mutex = self._mutex
        mutex.acquire()
        try:
            mapping = self._map
            if mapping is None:
                self._handle.pwrite(raw, 0)
                return
            sequence = self._sequence + 2
            mapping.store_sequenced(raw, 0, sequence=sequence, at=lock.SEQUENCE_OFFSET)
            self._sequence = sequence
        finally:
            mutex.release()

    def binding(self) -> tuple[object, ...] | None:
        """For the compiled publication (format/_durable.c): the mutex's acquire and release
        and the type of a real mapping, whose ``_map`` it stores into as ``publish`` does
        (checking both under the mutex each time); None when LOCK is not mapped from a file."""
        if type(self._map) is not OsSharedMap:
            return None
        return self._mutex.acquire, self._mutex.release, OsSharedMap

    def pwrite(self, data: Buffer, offset: int) -> None:
        self._handle.pwrite(data, offset)

    def pread(self, size: int, offset: int) -> bytes:
        return self._handle.pread(size, offset)

    def size(self) -> int:
        return self._handle.size()

    def allocate(self, offset: int, length: int) -> None:
        self._handle.allocate(offset, length)  # the FileHandle protocol; LOCK never grows so

    def truncate(self, size: int) -> None:
        self._handle.truncate(size)

    def sync(self, site: str) -> None:
        self._handle.sync(site)

    def close(self) -> None:
        with self._mutex:
            mapping, self._map = self._map, None
        if mapping is not None:
            mapping.close()
        self._handle.close()


def take_lock(fs: FileSystem, directory: str) -> LockHandle:
    """Take the writer lock, publish this process's pid in it and map it."""
    path = posixpath.join(directory, LOCK_NAME)
    handle = fs.lock(path, exclusive=True)
    if handle is None:
        found = read_lock(fs, directory)
        raise LockError(directory, found.pid if found is not None else None)
    try:
        # Continue the generation the last writer left (see format/lock.py): this open is a
        # change, and no two sessions may publish the same bytes.
        before = handle.pread(lock.MAPPED_SIZE, 0)
        previous = lock.decode(before)
        generation = (previous.generation or 0) + 1 if previous is not None else 1
        # One pwrite of the mapped size: it extends an older writer's shorter file so that
        # it can be mapped, and continues the sequence (readers compare it too).
        sequence = lock.next_sequence(lock.sequence_of(before))
        raw = lock.encode(_pid[0], 0, 0, generation=generation)
        handle.pwrite(lock.encode_mapped(raw, sequence), 0)
        return LockHandle(handle, sequence)
    except BaseException:
        handle.close()  # or the lock stays held and every later open gets LockError
        raise


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
    and the writer's counters (stores into LOCK's mapping, or one ``pwrite``; no barrier).

    A closed log publishes pid 0: everything in its files is durable. Otherwise readers trust
    only the published durable LSN, whether the writer is alive or was killed.
    """
    pid = 0 if closed else _pid[0]
    raw = lock.encode(pid, durable_lsn, rewinds, counters, generation)
    if handle.__class__ is LockHandle:  # the writer's (never subclassed)
        handle.publish(raw)
    else:
        handle.pwrite(raw, 0)


def generation_of(handle: FileHandle) -> int:
    """The generation the writer holding ``handle`` published at ``take_lock``."""
    found = lock.decode(handle.pread(lock.SIZE, 0))
    return found.generation or 1 if found is not None else 1


class LockWatch:
    """LOCK's bytes for a readonly view. A look before each read costs no system call: the
    file's first ``MAPPED_SIZE`` bytes stay mapped shared, and a look copies them under the
    seqlock (format/lock.py). Where the file cannot be mapped (shorter, as an older writer
    leaves it; a file system without mappings) a look is one ``pread`` of a handle kept
    open, as before 0.4.

    segwal never replaces, deletes or shortens LOCK (writers store or ``pwrite`` in place),
    so the mapping sees every change. Should something else replace the file, the file is
    opened (and mapped) again at least every ``REOPEN_SECONDS``, and at each look while
    LOCK is missing. (Something that shortened LOCK below the mapping would make a look
    touch a page past the file's end, which kills the process with SIGBUS: nothing does.)
    """

    REOPEN_SECONDS = 1.0
    STUCK_SECONDS = 0.05

    def __init__(self, fs: FileSystem, directory: str) -> None:
        self._fs = fs
        self._path = posixpath.join(directory, LOCK_NAME)
        self._handle: FileHandle | None = None
        self._map: SharedMap | None = None
        self._stuck = -1  # an odd sequence given up on (a writer died between stores)
        self._opened = 0.0
        self._closed = False

    @property
    def mapped(self) -> bool:
        return self._map is not None

    def read(self) -> bytes | None:
        """LOCK's bytes as they are now (None: no LOCK); mapped, a seqlock copy of the
        first ``MAPPED_SIZE`` bytes, the sequence word included. The caller serialises."""
        if monotonic() - self._opened >= self.REOPEN_SECONDS or (
            self._map is None and self._handle is None
        ):
            self._reopen()
        mapping = self._map
        if mapping is not None:
            at = lock.SEQUENCE_OFFSET
            before = mapping.load_word(at)
            raw = mapping.load(lock.MAPPED_SIZE, 0)
            if (before & 1 or mapping.load_word(at) != before) and before != self._stuck:
                raw = self._wait_for_copy(mapping)
            return raw
        handle = self._handle
        return None if handle is None else handle.pread(lock.SIZE, 0)

    def fast(self) -> tuple[Any, float] | None:
        """For a look without this object: the mapped region (sliceable, ``[0:128]`` is
        the bytes ``same`` compares) and the monotonic time until which it may be trusted;
        None when LOCK is not mapped through an OS mapping. The caller serialises."""
        mapping = self._map
        if not isinstance(mapping, OsSharedMap):
            return None
        region = mapping.region()
        return None if region is None else (region, self._opened + self.REOPEN_SECONDS)

    def same(self, key: bytes) -> bool:
        """Whether LOCK still holds ``key`` (a copy ``read`` returned): one copy of the
        mapped bytes and a comparison, no system call. No seqlock is needed for this answer:
        a copy equal to ``key`` read the sequence word at ``key``'s value, so no publication
        had begun when it was loaded and LOCK said ``key`` then; a copy torn by one differs
        from ``key`` (the sequence or the bytes) and costs a plan, never a stale view. An
        older writer's ``pwrite`` changes the bytes, as in 0.3."""
        if monotonic() - self._opened >= self.REOPEN_SECONDS:
            return False  # read() opens the file again
        mapping = self._map
        if mapping is not None:
            return mapping.load(lock.MAPPED_SIZE, 0) == key
        handle = self._handle
        return handle is not None and handle.pread(lock.SIZE, 0) == key

    def _wait_for_copy(self, mapping: SharedMap) -> bytes:
        """A copy taken while no publication ran: the writer stores a few words, unless it
        lost its CPU between two stores (yield ours), or died there (give up after
        ``STUCK_SECONDS`` and remember that odd value, so later looks do not wait again)."""
        at = lock.SEQUENCE_OFFSET
        deadline = monotonic() + self.STUCK_SECONDS
        while True:
            for _try in range(_TRIES):
                before = mapping.load_word(at)
                raw = mapping.load(lock.MAPPED_SIZE, 0)
                if not before & 1 and mapping.load_word(at) == before:
                    return raw
            if monotonic() >= deadline:
                # Odd for good: a writer killed between two stores, or bytes segwal did not
                # write. The copy as it is: its complements show a torn one (format/lock.py),
                # and the odd sequence in it differs from every even one to come.
                self._stuck = before
                return raw
            sleep(0)  # lets a writer run: a thread here (the GIL), or a process on this CPU

    def _reopen(self) -> None:
        self._let_go()
        if self._closed:
            return
        try:
            handle = self._fs.open_read(self._path)
        except OSError:
            return
        self._opened = monotonic()
        self._map = _map(handle, writable=False)
        if self._map is None:
            self._handle = handle
        else:
            handle.close()  # the mapping outlives the descriptor

    def close(self) -> None:
        self._closed = True
        self._let_go()

    def _let_go(self) -> None:
        handle, self._handle = self._handle, None
        mapping, self._map = self._map, None
        if mapping is not None:
            mapping.close()
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
