"""The open files of :class:`~segwal.testing.memfs.MemoryFileSystem` and their shared mappings.

A :class:`MemoryFile` checks a call like the kernel would (EBADF, EINVAL, O_DIRECT
alignment), then records it through its file system, where faults are injected and the
pending, unsynced effect is kept. A :class:`MemoryMap` is the model of
``storage.fileio.OsSharedMap`` (the LOCK mapping).
"""

from __future__ import annotations

import errno
import struct
from typing import Final

from segwal.storage.fileio import DIRECT_BLOCK, Buffer
from segwal.testing.nodes import _Dir, _Disk, _Node
from segwal.testing.oplog import OpLog, _err

_DIR_SIZE: Final = 4096


class MemoryFile:
    """An open file of a :class:`MemoryFileSystem`; a ``segwal.storage.fileio.FileHandle``."""

    __slots__ = ("_closed", "_direct", "_fs", "_ino", "_path", "_writable")

    def __init__(
        self, fs: OpLog, ino: int, path: str, writable: bool, direct: bool = False
    ) -> None:
        self._fs, self._ino, self._path, self._writable = fs, ino, path, writable
        self._closed = False
        self._direct = direct  # O_DIRECT: writes must be whole, aligned blocks

    @property
    def path(self) -> str:
        return self._path

    def _node(self, op: str) -> _Node:
        if self._closed:
            raise _err(op, self._path, errno.EBADF)
        return self._fs._disk.nodes[self._ino]

    def pwrite(self, data: Buffer, offset: int) -> None:
        payload = bytes(memoryview(data).cast("B"))
        fs = self._fs
        with fs._lock:
            self._node("write")
            if not self._writable:
                raise _err("write", self._path, errno.EBADF)
            if offset < 0:
                raise _err("write", self._path, errno.EINVAL)
            if self._direct and (offset % DIRECT_BLOCK or len(payload) % DIRECT_BLOCK):
                raise _err("write", self._path, errno.EINVAL)  # as O_DIRECT on Linux
            if not payload:
                return
            fault = fs._injected("write")
            if fault is not None:
                payload = payload[: max(0, fault.short or 0)]
            action = (_Disk.write, (self._ino, offset, payload)) if payload else None
            code = None if fault is None else fault.error
            fields = {"offset": offset, "length": len(payload), "data": payload, "error": code}
            fs._do("write", action, path=self._path, **fields)
            if code is not None:
                raise _err("write", self._path, code)

    def pread(self, size: int, offset: int) -> bytes:
        with self._fs._lock:
            node = self._node("read")
            if size < 0 or offset < 0:
                raise _err("read", self._path, errno.EINVAL)
            if isinstance(node, _Dir):
                raise _err("read", self._path, errno.EISDIR)
            self._fs._check("read", "read", self._path)
            return bytes(node.cur[offset : offset + size])

    def size(self) -> int:
        with self._fs._lock:
            node = self._node("stat")
            self._fs._check("stat", "stat", self._path)
            return _DIR_SIZE if isinstance(node, _Dir) else len(node.cur)

    def truncate(self, size: int) -> None:
        fs = self._fs
        with fs._lock:
            self._node("truncate")
            if not self._writable or size < 0:
                raise _err("truncate", self._path, errno.EINVAL)
            fs._check("truncate", "truncate", self._path, "truncate", length=size)
            action = (_Disk.truncate, (self._ino, size))
            fs._do("truncate", action, path=self._path, length=size)

    # -- preallocation (preallocate=True): kept together ----------------------------------

    def allocate(self, offset: int, length: int) -> None:
        """posix_fallocate: the file grows to ``offset + length`` with zeros (never below
        its size). Modelled as a pending size change, like a truncate that grows: a crash
        before the next sync keeps the old size or the new one, and the zeros are the file's
        own (an allocated range reads as zeros, never as garbage)."""
        fs = self._fs
        with fs._lock:
            self._node("allocate")
            if not self._writable or offset < 0 or length <= 0:
                raise _err("allocate", self._path, errno.EINVAL if self._writable else errno.EBADF)
            fs._check("allocate", "allocate", self._path, "allocate", length=offset + length)
            node = fs._disk.nodes[self._ino]
            if offset + length <= len(node.cur):
                return  # already allocated (a real fallocate changes nothing visible)
            action = (_Disk.truncate, (self._ino, offset + length))
            fs._do("allocate", action, path=self._path, offset=offset, length=length)

    def start_writeback(self, offset: int, length: int) -> None:
        """OsFile's sync_file_range(WRITE): not a barrier, so the model's disk is unchanged
        (a crash may already find unsynced writes on a real disk, which the model allows)."""
        self._fs.writeback_starts.append((self._path, offset, length))

    def sync(self, site: str) -> None:
        fs = self._fs
        with fs._lock:
            fs.sync_counts[site] += 1
            if site in fs.skip_sync_sites:
                fs._do("sync", None, path=self._path, site=site, skipped=True)
                return
            self._node("fdatasync")
            fault = fs._injected("sync")
            code = None if fault is None else fault.error
            action = (_Disk.sync, (self._ino, code is None))
            fs._do("sync", action, path=self._path, site=site, error=code)
            if code is not None:
                raise _err("fdatasync", self._path, code)

    def close(self) -> None:
        with self._fs._lock:
            if not self._closed:
                self._closed = True
                self._fs._locks.get(self._ino, {}).pop(self, None)

    def map_shared(self, size: int, *, writable: bool) -> MemoryMap:
        """The model of ``OsFile.map_shared`` (see :class:`MemoryMap`)."""
        with self._fs._lock:
            node = self._node("map")
            if writable and not self._writable:
                raise _err("map", self._path, errno.EACCES)
            if isinstance(node, _Dir) or size <= 0 or size % 8 or len(node.cur) < size:
                raise _err("map", self._path, errno.EINVAL)
            return MemoryMap(self._fs, self._ino, self._path, size, writable)


_WORD = struct.Struct("<Q")


class MemoryMap:
    """A shared mapping of an inode's first ``size`` bytes.

    It follows the inode, not the name (a rename over the file leaves it on the old file).
    A load sees the inode's current bytes, every write to them included; a store changes
    them at once, for every reader, and is recorded as an op of kind ``map_write`` with the
    same pending, unsynced effect as a ``write``: a crash image keeps it or not, as the page
    cache would. ``map_write`` has no system call: the strace parity test leaves it out by
    name. A load or store past the inode's end raises ``StorageError`` (EFAULT) where a
    real process would die of SIGBUS; stores are never faulted otherwise (a store into
    memory cannot fail).
    """

    __slots__ = ("_fs", "_ino", "_path", "_size", "_writable")

    def __init__(self, fs: OpLog, ino: int, path: str, size: int, writable: bool):
        self._fs, self._ino, self._path = fs, ino, path
        self._size: int | None = size
        self._writable = writable

    def _span(self, size: int, offset: int) -> bytes | bytearray:
        """The inode's bytes, once ``offset .. offset + size`` is checked (lock held)."""
        if self._size is None:
            raise _err("map", self._path, errno.EBADF)
        if offset < 0 or size < 0 or offset + size > self._size:
            raise _err("map", self._path, errno.EINVAL)
        node = self._fs._disk.nodes[self._ino]
        if isinstance(node, _Dir) or len(node.cur) < offset + size:
            raise _err("map", self._path, errno.EFAULT)  # SIGBUS in a real process
        return node.cur

    def load(self, size: int, offset: int) -> bytes:
        with self._fs._lock:
            return bytes(self._span(size, offset)[offset : offset + size])

    def load_word(self, offset: int) -> int:
        with self._fs._lock:
            value: int = _WORD.unpack_from(self._span(8, offset), offset)[0]
            return value

    def store(self, data: Buffer, offset: int) -> None:
        payload = bytes(memoryview(data).cast("B"))
        fs = self._fs
        with fs._lock:
            self._span(len(payload), offset)
            if not self._writable:
                raise _err("map", self._path, errno.EACCES)
            action = (_Disk.write, (self._ino, offset, payload))
            fs._do(
                "map_write",
                action,
                path=self._path,
                offset=offset,
                length=len(payload),
                data=payload,
            )

    def store_sequenced(self, data: Buffer, offset: int, *, sequence: int, at: int) -> None:
        """One ``map_write`` of the span from the first byte to the last one written, as it
        is after the three stores: no reader of this file system can see between them (its
        lock serialises every call), so the odd sequence never shows, and a publication is
        one pending unit, as the ``pwrite`` it replaces was."""
        payload = bytes(memoryview(data).cast("B"))
        start, end = min(offset, at), max(offset + len(payload), at + 8)
        with self._fs._lock:
            span = bytearray(self._span(end - start, start)[start:end])
            span[offset - start : offset - start + len(payload)] = payload
            span[at - start : at - start + 8] = _WORD.pack(sequence)
            self.store(bytes(span), start)

    def close(self) -> None:
        with self._fs._lock:
            self._size = None
