"""The I/O seam: every operation segwal performs on the log's files and directory.

Two implementations exist: :class:`OsFileSystem` here (the real one) and the crashable
in-memory one in :mod:`segwal.testing`. Every ``OSError`` of the real one becomes a
:class:`~segwal.errors.StorageError` here, in one place, carrying the operation and path.

Each barrier (``FileHandle.sync`` and ``FileSystem.sync_dir``) names its call site, so the
crash tests can skip one site at a time and prove that every barrier is load-bearing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from segwal.errors import NotRegularFileError, StorageError

Buffer = bytes | bytearray | memoryview
# O_DIRECT writes (direct_io=True): offsets, lengths and buffer addresses are multiples of
# this (the page size; every common logical block size divides it).
DIRECT_BLOCK = 4096
AlignedBuffer = mmap.mmap


def aligned_buffer(size: int) -> AlignedBuffer:
    """Anonymous memory of ``size`` bytes at a page-aligned address, as O_DIRECT wants the
    buffer of a write to be (bytes and bytearray give no such promise)."""
    return mmap.mmap(-1, size)


@dataclass(frozen=True, slots=True)
class Entry:
    """One directory entry."""

    name: str
    is_file: bool


class FileHandle(Protocol):
    """An open file of the log."""

    @property
    def path(self) -> str: ...

    def pwrite(self, data: Buffer, offset: int) -> None:
        """Write all of ``data`` at ``offset`` (short writes are retried until done)."""

    def pread(self, size: int, offset: int) -> bytes:
        """Read up to ``size`` bytes at ``offset``; fewer only at the end of the file."""

    def size(self) -> int:
        """The file's current size in bytes."""

    def truncate(self, size: int) -> None:
        """Cut the file to ``size`` bytes (pending until the next sync)."""

    def allocate(self, offset: int, length: int) -> None:
        """Give bytes ``[offset, offset + length)`` disk space, reading as zeros where the
        file had none (posix_fallocate; zeros written where the file system refuses it).
        The file grows to cover them; like a write, the new size is pending until the next
        sync. Existing bytes are never changed.
        """

    def sync(self, site: str) -> None:
        """fdatasync: make the file's data and size durable."""

    def close(self) -> None:
        """Close the handle; closing twice is harmless."""


class FileSystem(Protocol):
    """The operations segwal needs from a file system; nothing else touches the disk."""

    def list_dir(self, path: str) -> list[Entry]: ...

    def make_dir(self, path: str) -> bool:
        """Create ``path`` (and parents) if missing, durably; True if it was created."""

    def open_read(self, path: str) -> FileHandle: ...

    def open_write(self, path: str) -> FileHandle:
        """Open an existing file for reading and writing."""

    def create(self, path: str) -> FileHandle:
        """Create a new file for reading and writing; fail if it exists."""

    def open_direct(self, path: str) -> FileHandle:
        """Open an existing file whose writes bypass the page cache (O_DIRECT): each
        ``pwrite`` offset, length and buffer address must be a multiple of DIRECT_BLOCK.
        Reads, size, truncate and sync are as for ``open_write``. A file system that
        refuses O_DIRECT (tmpfs) raises StorageError with errno EINVAL."""

    def rename(self, src: str, dst: str) -> None: ...

    def unlink(self, path: str) -> None: ...

    def sync_dir(self, path: str, site: str) -> None:
        """fsync a directory so creates, renames and unlinks in it are durable."""

    def lock(self, path: str, *, exclusive: bool) -> FileHandle | None:
        """Take the lock on ``path`` (created if missing) without waiting.

        Returns a handle that holds the lock until closed, or None when another process
        holds a conflicting lock.
        """


def _file_type(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, name in (
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "special file"


@contextlib.contextmanager
def _storage(op: str, path: str) -> Iterator[None]:
    try:
        yield
    except StorageError:
        raise
    except OSError as exc:
        raise StorageError(op, path, exc) from exc


class OsFile:
    """A file descriptor with the seam's operations."""

    __slots__ = ("_fd", "_path")

    def __init__(self, fd: int, path: str) -> None:
        self._fd = fd
        self._path = path

    @property
    def path(self) -> str:
        return self._path

    @property
    def fd(self) -> int:
        """The descriptor (-1 once closed): the single-append fast path (log/appender.py)
        writes its frame with the compiled ``write_record``, the same one ``pwrite`` at the
        same offset as ``pwrite`` here (tests/test_parity.py compares them under strace)."""
        return self._fd

    def pwrite(self, data: Buffer, offset: int) -> None:
        size = data.nbytes if isinstance(data, memoryview) else len(data)
        try:
            written = os.pwrite(self._fd, data, offset)
            if written != size:
                # Rare: a short write (a signal, a full disk); finish it or fail with a reason.
                view = memoryview(data).cast("B")[written:]
                while view:
                    written = os.pwrite(self._fd, view, offset + size - len(view))
                    if written <= 0:
                        raise OSError(errno.EIO, "write made no progress")
                    view = view[written:]
        except OSError as exc:
            raise StorageError("write", self._path, exc) from exc

    # pread, size and open are on the path of every open and point read: plain try/except
    # costs a fraction of a context manager per call.
    def pread(self, size: int, offset: int) -> bytes:
        try:
            data = os.pread(self._fd, size, offset)
            if len(data) == size or not data:
                return data
            parts = [data]
            got = len(data)
            while got < size:
                more = os.pread(self._fd, size - got, offset + got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            return b"".join(parts)
        except OSError as exc:
            raise StorageError("read", self._path, exc) from exc

    def size(self) -> int:
        try:
            return os.fstat(self._fd).st_size
        except OSError as exc:
            raise StorageError("stat", self._path, exc) from exc

    def truncate(self, size: int) -> None:
        with _storage("truncate", self._path):
            os.ftruncate(self._fd, size)

    def allocate(self, offset: int, length: int) -> None:
        with _storage("allocate", self._path):
            try:
                os.posix_fallocate(self._fd, offset, length)
            except OSError as exc:
                # glibc already emulates fallocate where the file system lacks it; these
                # are the refusals left (some FUSE and network file systems).
                if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
                zero_fill(self._fd, offset, length)

    def start_writeback(self, offset: int, length: int) -> None:
        """Start writing the range's dirty pages to the disk and return (sync_file_range
        WRITE): not a barrier, nothing becomes durable by it, so a failure is ignored; the
        later fdatasync then finds less to write (RocksDB's bytes_per_sync)."""
        if _SYNC_FILE_RANGE is not None and self._fd >= 0:
            _SYNC_FILE_RANGE(self._fd, offset, length, _SYNC_FILE_RANGE_WRITE)

    def sync(self, site: str) -> None:
        # Once per durable append: plain try/except, as in pread.
        try:
            if self._fd < 0:  # os.fdatasync(-1) raises ValueError, not EBADF
                raise OSError(errno.EBADF, "file is closed")
            os.fdatasync(self._fd)
        except OSError as exc:
            raise StorageError("fdatasync", self._path, exc) from exc

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError as exc:
                raise StorageError("close", self._path, exc) from exc

    def map_shared(self, size: int, *, writable: bool) -> OsSharedMap:
        """See :class:`Mappable` (shared mappings, at the end of this module)."""
        return OsSharedMap(self._fd, self._path, size, writable)


class OsDirectFile(OsFile):
    """O_DIRECT writes on a second descriptor; reads, size, truncate and sync through the
    buffered one (the kernel keeps the page cache coherent with direct writes)."""

    __slots__ = ("_dfd",)

    def __init__(self, fd: int, dfd: int, path: str) -> None:
        super().__init__(fd, path)
        self._dfd = dfd

    def pwrite(self, data: Buffer, offset: int) -> None:
        try:
            size = data.nbytes if isinstance(data, memoryview) else len(data)
            written = os.pwrite(self._dfd, data, offset)
            if written != size:  # aligned pieces only: a short direct write is a failure
                raise OSError(errno.EIO, f"short O_DIRECT write ({written} of {size} bytes)")
        except OSError as exc:
            raise StorageError("write", self._path, exc) from exc

    def close(self) -> None:
        dfd, self._dfd = self._dfd, -1
        if dfd >= 0:
            with contextlib.suppress(OSError):
                os.close(dfd)
        super().close()


def _sync_file_range() -> Any:
    """libc's sync_file_range (Linux), through ctypes, which releases the GIL around it;
    None where there is none (or no ctypes): then no writeback is started early."""
    try:
        import ctypes  # here: a Python built without _ctypes still imports segwal

        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (ImportError, AttributeError, OSError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn


_SYNC_FILE_RANGE = _sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2  # start writeback of dirty pages; wait for nothing


def zero_fill(fd: int, offset: int, length: int) -> None:
    """Write zeros over ``[offset, offset + length)`` past the file's end (never below it:
    those bytes are data): preallocation where fallocate is refused."""
    start = max(offset, os.fstat(fd).st_size)
    end = offset + length
    zeros = bytes(min(1 << 20, max(0, end - start)))
    while start < end:
        written = os.pwrite(fd, memoryview(zeros)[: end - start], start)
        if written <= 0:
            raise OSError(errno.EIO, "write made no progress")
        start += written


class OsFileSystem:
    """The real file system, through plain POSIX calls."""

    def list_dir(self, path: str) -> list[Entry]:
        with _storage("list", path), os.scandir(path) as it:
            return [Entry(e.name, e.is_file(follow_symlinks=False)) for e in it]

    def make_dir(self, path: str) -> bool:
        if os.path.isdir(path):
            return False
        parent = os.path.dirname(os.path.abspath(path))
        if parent != os.path.abspath(path):
            self.make_dir(parent)
        with _storage("mkdir", path):
            try:
                os.mkdir(path)
            except FileExistsError:
                return False
        # The new directory's entry lives in its parent: sync the parent to keep it.
        self.sync_dir(parent, "make_dir")
        return True

    def _open(self, op: str, path: str, flags: int) -> OsFile:
        # O_NONBLOCK: a FIFO under a name segwal uses (META, LOCK, cursor.x, a segment)
        # would block a plain open until some writer appeared. It changes nothing for
        # regular files, and the fstat below refuses FIFOs, sockets and devices. A directory
        # needs no check: the OS refuses to open it for writing and to read it (EISDIR).
        try:
            fd = os.open(path, flags | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            mode = stat.S_IFREG
            if exc.errno == errno.ENXIO:  # a socket (or a device with nothing behind it)
                with contextlib.suppress(OSError):
                    mode = os.stat(path).st_mode
            if not stat.S_ISREG(mode):
                raise NotRegularFileError(op, path, _file_type(mode)) from exc
            raise StorageError(op, path, exc) from exc
        try:
            mode = os.fstat(fd).st_mode
        except OSError as exc:
            os.close(fd)
            raise StorageError(op, path, exc) from exc
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            os.close(fd)
            raise NotRegularFileError(op, path, _file_type(mode))
        return OsFile(fd, path)

    def open_read(self, path: str) -> OsFile:
        return self._open("open", path, os.O_RDONLY)

    def open_write(self, path: str) -> OsFile:
        return self._open("open", path, os.O_RDWR)

    def create(self, path: str) -> OsFile:
        return self._open("create", path, os.O_RDWR | os.O_CREAT | os.O_EXCL)

    def open_direct(self, path: str) -> OsDirectFile:
        direct = getattr(os, "O_DIRECT", 0)
        if not direct:  # no such flag on this OS
            raise StorageError("open O_DIRECT", path, OSError(errno.EINVAL, "no O_DIRECT"))
        handle = self._open("open", path, os.O_RDWR)
        try:
            dfd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | direct)
        except OSError as exc:
            handle.close()
            raise StorageError("open O_DIRECT", path, exc) from exc
        fd, handle._fd = handle._fd, -1  # the direct handle owns it now
        return OsDirectFile(fd, dfd, path)

    def rename(self, src: str, dst: str) -> None:
        with _storage("rename", src):
            os.rename(src, dst)

    def unlink(self, path: str) -> None:
        with _storage("unlink", path):
            os.unlink(path)

    def sync_dir(self, path: str, site: str) -> None:
        with _storage("fsync directory", path):
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def lock(self, path: str, *, exclusive: bool) -> OsFile | None:
        handle = self._open("open", path, os.O_RDWR | os.O_CREAT)
        try:
            with _storage("lock", path):
                fcntl.flock(
                    handle._fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
                )
        except StorageError as exc:
            handle.close()
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise
        return handle


# -- shared mappings ------------------------------------------------------------------------
# One operation, for LOCK's published words (docs/FORMAT.md "LOCK mapping"): the writer
# publishes by storing into a shared mapping and readers look without a system call. It is
# optional: a FileSystem passed to segwal.open by a caller may have handles without it, and
# segwal then publishes with pwrite and looks with pread, as before 0.4.


class SharedMap(Protocol):
    """A ``MAP_SHARED`` mapping of a file's first bytes. A store is seen at once by every
    process that maps or reads the file (it lands in the page cache, like a ``pwrite``) and
    is never synced. Accesses are memory accesses, not system calls."""

    def load(self, size: int, offset: int) -> bytes:
        """Copy ``size`` bytes at ``offset``."""

    def load_word(self, offset: int) -> int:
        """The u64 at ``offset`` (a multiple of 8), read with one load: never torn."""

    def store(self, data: Buffer, offset: int) -> None:
        """Copy ``data`` to ``offset`` (the mapping must cover it)."""

    def store_sequenced(self, data: Buffer, offset: int, *, sequence: int, at: int) -> None:
        """A seqlock write: store ``sequence - 1`` (odd) as the u64 at ``at`` (a multiple of
        8, outside ``data``'s span), then ``data`` at ``offset``, then ``sequence`` (even),
        each word with one store, in that order. The caller serialises writers."""

    def close(self) -> None:
        """Unmap; closing twice is harmless. Later accesses raise ``StorageError``."""


@runtime_checkable
class Mappable(Protocol):
    """A :class:`FileHandle` that can map its file shared."""

    def map_shared(self, size: int, *, writable: bool) -> SharedMap:
        """Map the file's first ``size`` bytes (a multiple of 8); ``StorageError`` when the
        file is shorter (touching a page past its end would kill the process with SIGBUS)
        or cannot be mapped. The mapping outlives the handle's ``close``."""


class OsSharedMap:
    """``mmap`` of a file descriptor. Words are native u64 through a cast memoryview (one
    aligned load or store each); the file's words are little-endian, so a big-endian host
    refuses to map and segwal falls back to pwrite and pread."""

    __slots__ = ("_map", "_path", "_words")

    def __init__(self, fd: int, path: str, size: int, writable: bool) -> None:
        self._path = path
        with _storage("map", path):
            if sys.byteorder != "little" or size <= 0 or size % 8:
                raise OSError(errno.EINVAL, "only little-endian hosts map u64 words")
            if os.fstat(fd).st_size < size:
                raise OSError(errno.EINVAL, f"file shorter than the {size} bytes to map")
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            self._map: mmap.mmap | None = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=prot)
        self._words = memoryview(self._map).cast("Q")

    def _closed(self, exc: Exception) -> StorageError:
        return StorageError("map", self._path, OSError(errno.EBADF, f"mapping closed ({exc})"))

    def region(self) -> mmap.mmap | None:
        """The mapping itself, for a reader's lock-free look (slicing a closed one raises
        ValueError); None once closed."""
        return self._map

    def load(self, size: int, offset: int) -> bytes:
        try:
            return self._words.obj[offset : offset + size]  # type: ignore[index, no-any-return]
        except ValueError as exc:
            raise self._closed(exc) from exc

    def load_word(self, offset: int) -> int:
        try:
            value: int = self._words[offset >> 3]
        except ValueError as exc:
            raise self._closed(exc) from exc
        return value

    def store(self, data: Buffer, offset: int) -> None:
        try:
            self._words.obj[offset : offset + len(data)] = data  # type: ignore[index]
        except ValueError as exc:
            raise self._closed(exc) from exc

    def store_sequenced(self, data: Buffer, offset: int, *, sequence: int, at: int) -> None:
        words = self._words
        try:
            words[at >> 3] = sequence - 1
            words.obj[offset : offset + len(data)] = data  # type: ignore[index]
            words[at >> 3] = sequence
        except ValueError as exc:
            raise self._closed(exc) from exc

    def close(self) -> None:
        mapped, self._map = self._map, None
        if mapped is not None:
            self._words.release()
            mapped.close()
