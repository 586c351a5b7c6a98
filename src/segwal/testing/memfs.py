"""The in-memory, recording, crashable file system: :class:`MemoryFileSystem`.

See :mod:`segwal.testing` for the fault model it follows and how to use it; crash images
are built by :mod:`segwal.testing.imaging`.
"""

from __future__ import annotations

import errno
import os
import posixpath
import random
import struct
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final

from segwal.errors import StorageError
from segwal.storage.fileio import DIRECT_BLOCK, Buffer, Entry
from segwal.testing.imaging import (
    FILLS,
    Image,
    _digest,
    _fingerprint,
    _Imager,
    candidate_subsets,
)
from segwal.testing.nodes import (
    _NONE,
    _ROOT,
    _Dir,
    _Disk,
    _File,
    _Node,
    _walk,
)
from segwal.testing.records import FAULT_KINDS, Fault, Op

__all__ = ["FAULT_KINDS", "Fault", "MemoryFile", "MemoryFileSystem", "Op"]

_DIR_SIZE: Final = 4096
_Action = tuple[Callable[..., None], tuple[Any, ...]]


def _err(op: str, path: str, code: int) -> StorageError:
    return StorageError(op, path, OSError(code, os.strerror(code)))


class MemoryFile:
    """An open file of a :class:`MemoryFileSystem`; a ``segwal.storage.fileio.FileHandle``."""

    __slots__ = ("_closed", "_direct", "_fs", "_ino", "_path", "_writable")

    def __init__(
        self, fs: MemoryFileSystem, ino: int, path: str, writable: bool, direct: bool = False
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


class MemoryFileSystem:
    """An in-memory, recording, crashable ``segwal.storage.fileio.FileSystem``.

    Paths are strings, normalised with :mod:`posixpath`; relative paths are relative to
    ``/``. Thread-safe: one internal lock serialises every call. Inodes are never freed,
    so memory grows with everything ever written.
    """

    def __init__(self, *, skip_sync_sites: Iterable[str] = (), refuse_direct: bool = False) -> None:
        self.refuse_direct = refuse_direct
        """open_direct raises EINVAL, as on tmpfs."""
        self._lock = threading.RLock()
        self._disk = _Disk()
        self._locks: dict[int, dict[MemoryFile, bool]] = {}
        self._ops: list[Op] = []
        self._actions: list[_Action | None] = []
        self._origin: _Disk = self._state()
        self.skip_sync_sites: set[str] = set(skip_sync_sites)
        """Barrier sites whose ``sync``/``sync_dir`` calls do nothing."""
        self.sync_counts: Counter[str] = Counter()
        """Barrier calls per site, skipped ones included."""
        self.calls: Counter[str] = Counter()
        """Calls per fault kind (see :data:`FAULT_KINDS`) that reached the disk."""
        self.faults: list[Fault] = []
        self.crash_info = ""
        """For a crash image: which pending units persisted (mask) and the fill used."""

    # -- the seam --------------------------------------------------------------------

    def list_dir(self, path: str) -> list[Entry]:
        with self._lock:
            node = self._disk.nodes[self._existing("list", path)]
            if not isinstance(node, _Dir):
                raise _err("list", path, errno.ENOTDIR)
            self._check("list", "list", path)
            return [
                Entry(n, isinstance(self._disk.nodes[i], _File))
                for n, i in sorted(node.cur.items())
            ]

    def make_dir(self, path: str) -> bool:
        """Create ``path`` and its parents, each made durable by ``sync_dir`` of its parent
        at site ``"make_dir"``, as ``OsFileSystem.make_dir`` does; True if it was created."""
        with self._lock:
            if not path:
                raise _err("mkdir", path, errno.ENOENT)
            try:
                if isinstance(self._disk.nodes[self._existing("mkdir", path)], _Dir):
                    return False
            except StorageError:
                pass
            absolute = posixpath.normpath(posixpath.join("/", path))
            parent = posixpath.dirname(absolute)
            if parent != absolute:
                self.make_dir(parent)
            folder, name, ino = self._find("mkdir", path)
            if ino is not None:
                return False
            self._check("mkdir", "mkdir", path, "mkdir")
            action = (_Disk.create, (folder, name, self._disk.next_ino, True))
            self._do("mkdir", action, path=path)
            self.sync_dir(parent, "make_dir")
            return True

    def open_read(self, path: str) -> MemoryFile:
        return self._open(path, writable=False)

    def open_write(self, path: str) -> MemoryFile:
        return self._open(path, writable=True)

    def open_direct(self, path: str) -> MemoryFile:
        """O_DIRECT (direct_io=True): writes must be whole DIRECT_BLOCK-aligned blocks, or
        EINVAL; they are pending until a sync like any write (a direct write reaches the
        device, not its platter). ``refuse_direct`` models tmpfs, which refuses the open."""
        if self.refuse_direct:
            with self._lock:
                self._existing("open O_DIRECT", path)
            raise _err("open O_DIRECT", path, errno.EINVAL)
        handle = self._open(path, writable=True)
        handle._direct = True
        return handle

    def create(self, path: str) -> MemoryFile:
        with self._lock:
            folder, name, ino = self._find("create", path)
            if ino is not None:
                raise _err("create", path, errno.EEXIST)
            self._check("create", "create", path, "create")
            ino = self._disk.next_ino
            self._do("create", (_Disk.create, (folder, name, ino, False)), path=path)
            return MemoryFile(self, ino, path, True)

    def rename(self, src: str, dst: str) -> None:
        with self._lock:
            src_dir, src_name, ino = self._find("rename", src)
            dst_dir, dst_name, old = self._find("rename", dst, report=src)
            if ino is None:
                raise _err("rename", src, errno.ENOENT)
            if ino == old:
                return
            if _ROOT in (ino, old):
                raise _err("rename", src, errno.EBUSY)
            is_dir = isinstance(self._disk.nodes[ino], _Dir)
            if is_dir and self._below(dst_dir, ino):
                raise _err("rename", src, errno.EINVAL)
            if old is not None and self._below(src_dir, old):
                raise _err("rename", src, errno.ENOTEMPTY)
            if old is not None:
                target = self._disk.nodes[old]
                if not is_dir and isinstance(target, _Dir):
                    raise _err("rename", src, errno.EISDIR)
                if is_dir and not isinstance(target, _Dir):
                    raise _err("rename", src, errno.ENOTDIR)
                if isinstance(target, _Dir) and target.cur:
                    raise _err("rename", src, errno.ENOTEMPTY)
            self._check("rename", "rename", src, "rename", target=dst)
            action = (_Disk.name, (src_dir, src_name, dst_dir, dst_name, ino))
            self._do("rename", action, path=src, target=dst)

    def unlink(self, path: str) -> None:
        with self._lock:
            folder, name, ino = self._find("unlink", path)
            if ino is None:
                raise _err("unlink", path, errno.ENOENT)
            if isinstance(self._disk.nodes[ino], _Dir):
                raise _err("unlink", path, errno.EISDIR)
            self._check("unlink", "unlink", path, "unlink")
            action = (_Disk.name, (folder, name, _NONE, "", ino))
            self._do("unlink", action, path=path)

    def sync_dir(self, path: str, site: str) -> None:
        with self._lock:
            self.sync_counts[site] += 1
            if site in self.skip_sync_sites:
                self._do("sync_dir", None, path=path, site=site, skipped=True)
                return
            ino = self._existing("fsync directory", path)
            if not isinstance(self._disk.nodes[ino], _Dir):
                raise _err("fsync directory", path, errno.ENOTDIR)
            fault = self._injected("sync_dir")
            code = None if fault is None else fault.error
            action = (_Disk.sync, (ino, code is None))
            self._do("sync_dir", action, path=path, site=site, error=code)
            if code is not None:
                raise _err("fsync directory", path, code)

    def lock(self, path: str, *, exclusive: bool) -> MemoryFile | None:
        """flock semantics: locks conflict between handles, also within one process."""
        with self._lock:
            folder, name, ino = self._find("open", path)
            if ino is not None and isinstance(self._disk.nodes[ino], _Dir):
                raise _err("open", path, errno.EISDIR)
            self._check("lock", "lock", path)
            if ino is None:
                ino = self._disk.next_ino
                self._do("lock", (_Disk.create, (folder, name, ino, False)), path=path)
            handle = MemoryFile(self, ino, path, True)
            holders = self._locks.setdefault(ino, {})
            if any(exclusive or other for other in holders.values()):
                handle.close()
                return None
            holders[handle] = exclusive
            return handle

    # -- the log, notes and faults -----------------------------------------------------

    @property
    def ops(self) -> Sequence[Op]:
        """Every mutating call and note so far, in order (read-only)."""
        return self._ops

    @property
    def op_count(self) -> int:
        return len(self._ops)

    def note(self, label: str, value: object = None) -> int:
        """Record a marker in the operation log; returns its index."""
        with self._lock:
            return self._do("note", None, label=label, value=value).index

    def mark_ack(self, value: object = None) -> int:
        """Record that ``value`` (say an LSN) was acknowledged: ``note("ack", value)``."""
        return self.note("ack", value)

    def notes(self, label: str = "ack", before: int | None = None) -> list[object]:
        """Values of the notes with ``label`` among ``ops[:before]`` (default: all)."""
        with self._lock:
            ops = self._ops if before is None else self._ops[:before]
            return [op.value for op in ops if op.kind == "note" and op.label == label]

    def fail(
        self,
        kind: str,
        *,
        nth: int = 1,
        error: int = errno.EIO,
        short: int | None = None,
        times: int | None = 1,
    ) -> Fault:
        """Make the ``nth`` call of ``kind`` from now fail with ``error`` (``times`` calls in
        a row; None: every call from then on). ``short`` (writes only): bytes applied first."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {sorted(FAULT_KINDS)}")
        if nth < 1 or (short is not None and (kind != "write" or short < 0)):
            raise ValueError("nth must be >= 1; short applies to writes and must be >= 0")
        fault = Fault(kind, nth, error, short, times)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    # -- states and crash images -------------------------------------------------------

    def replay(self, k: int) -> MemoryFileSystem:
        """The file system as it was after ``ops[:k]`` (pending state included), with that
        part of the log; ``replay(op_count)`` is an independent copy of this one."""
        with self._lock:
            if not 0 <= k <= len(self._ops):
                raise IndexError(f"operation index {k} outside 0..{len(self._ops)}")
            ops, actions, origin = self._ops[:k], self._actions[:k], self._origin
        fs = MemoryFileSystem(skip_sync_sites=self.skip_sync_sites)
        fs._load(origin)
        for op, action in zip(ops, actions, strict=True):
            fs._apply(op, action)
        return fs

    def replays(self) -> Iterator[tuple[int, MemoryFileSystem]]:
        """(k, state after ``ops[:k]``) for k = 0..op_count, in one pass over the log.

        The same object is yielded each time, advanced by one operation: use it (for
        instance call ``crash_states``) before asking for the next; do not mutate it.
        """
        fs = self.replay(0)
        with self._lock:
            ops, actions = list(self._ops), list(self._actions)
        yield 0, fs
        for k, (op, action) in enumerate(zip(ops, actions, strict=True), 1):
            fs._apply(op, action)
            yield k, fs

    def fork(self) -> MemoryFileSystem:
        """An independent copy, pending state and log included."""
        with self._lock:
            return self.replay(len(self._ops))

    def pending_units(self) -> int:
        """How many independent units (sector pieces, truncates, name ops) are pending."""
        with self._lock:
            return _Imager(self._disk.nodes).count

    def crash_states(
        self,
        *,
        seed: int = 0,
        rng: random.Random | None = None,
        random_subsets: int = 32,
        exhaustive_limit: int = 10,
        fills: Sequence[str] = FILLS,
        limit: int | None = None,
    ) -> list[MemoryFileSystem]:
        """The distinct disks a power loss now could leave, each a new file system with
        nothing pending (its ``crash_info`` says which units persisted).

        Forced state is always there; of the pending units, the subsets of
        :func:`candidate_subsets` persist, each combined with each fill of ``fills``.
        Images are deduplicated by :meth:`fingerprint`; at most ``limit`` are returned.
        """
        if unknown := set(fills) - set(FILLS):
            raise ValueError(f"unknown fills {sorted(unknown)}; use {FILLS}")
        with self._lock:
            imager = _Imager(self._disk.nodes)
            masks = candidate_subsets(
                imager.count,
                exhaustive_limit=exhaustive_limit,
                random_subsets=random_subsets,
                rng=rng or random.Random(seed),
            )
            seen: set[str] = set()
            out: list[MemoryFileSystem] = []
            for mask in masks:
                for fill in fills:
                    key, image = imager.image(mask, fill)
                    if key not in seen:
                        seen.add(key)
                        out.append(MemoryFileSystem._from_image(image))
                        if limit is not None and len(out) >= limit:
                            return out
            return out

    def snapshot(self) -> MemoryFileSystem:
        """The disk after a power loss now in which nothing pending persisted."""
        with self._lock:
            imager = _Imager(self._disk.nodes)
            return MemoryFileSystem._from_image(imager.image((False,) * imager.count, "clean")[1])

    def fingerprint(self) -> str:
        """A hash of the current names and contents (equal trees, equal fingerprints)."""
        with self._lock:
            return _fingerprint(
                (path, None if content is None else _digest(content))
                for path, content in self.tree().items()
            )

    def tree(self, root: str = "/") -> dict[str, bytes | None]:
        """Current view below ``root``: absolute path to content (None for directories)."""
        with self._lock:
            ino = self._existing("list", root)
            if not isinstance(self._disk.nodes[ino], _Dir):
                raise _err("list", root, errno.ENOTDIR)
            prefix = posixpath.normpath(posixpath.join("/", root)).rstrip("/")
            out: dict[str, bytes | None] = {}
            for path, child, _ in _walk(self._entries, ino, prefix):
                node = self._disk.nodes[child]
                out[path] = None if isinstance(node, _Dir) else bytes(node.cur)
            return out

    def materialize(self, dest: str, source: str = "/") -> None:
        """Write the current view below ``source`` into the real directory ``dest``."""
        prefix = posixpath.normpath(posixpath.join("/", source)).rstrip("/")
        os.makedirs(dest, exist_ok=True)
        for path, content in sorted(self.tree(source).items()):
            target = os.path.join(dest, path[len(prefix) :].lstrip("/"))
            if content is None:
                os.makedirs(target, exist_ok=True)
            else:
                with open(target, "wb") as f:
                    f.write(content)

    @classmethod
    def from_directory(cls, path: str, at: str = "/") -> MemoryFileSystem:
        """Load a real directory tree (regular files and directories) into a new file
        system at ``at``, all durable; the log starts empty."""
        fs = cls()
        folder = _ROOT
        for name in fs._split("mkdir", at):
            child = fs._dir(folder).cur.get(name)
            if child is None:
                child = fs._disk.next_ino
                fs._disk.create(folder, name, child, True)
            folder = child
        stack = [(path, folder)]
        while stack:
            real, folder = stack.pop()
            with os.scandir(real) as it:
                entries = sorted(it, key=lambda e: e.name)
            for entry in entries:
                ino = fs._disk.next_ino
                if entry.is_dir(follow_symlinks=False):
                    fs._disk.create(folder, entry.name, ino, True)
                    stack.append((entry.path, ino))
                elif entry.is_file(follow_symlinks=False):
                    fs._disk.create(folder, entry.name, ino, False)
                    with open(entry.path, "rb") as f:
                        data = f.read()
                    if data:
                        fs._disk.write(ino, 0, data)
        for ino in list(fs._disk.nodes):
            fs._disk.sync(ino, True)
        fs._origin = fs._state()
        return fs

    # -- internals -----------------------------------------------------------------------

    @classmethod
    def _from_image(cls, image: Image) -> MemoryFileSystem:
        fs = cls()
        nodes: dict[int, _Node] = {ino: _Dir(entries) for ino, entries in image.dirs.items()}
        nodes.update((ino, _File(content)) for ino, content in image.files.items())
        fs._disk = _Disk(nodes)
        fs._origin = fs._state()
        fs.crash_info = image.info
        return fs

    def _state(self) -> _Disk:
        return self._disk.copy()

    def _load(self, state: _Disk) -> None:
        self._disk = state.copy()
        self._origin = state

    def _apply(self, op: Op, action: _Action | None) -> None:
        if action is not None:
            action[0](self._disk, *action[1])
        self._ops.append(op)
        self._actions.append(action)

    def _do(self, kind: str, action: _Action | None, **fields: Any) -> Op:
        op = Op(len(self._ops), kind, **fields)
        self._apply(op, action)
        return op

    def _injected(self, kind: str) -> Fault | None:
        self.calls[kind] += 1
        hits = [fault for fault in self.faults if fault.kind == kind and fault.hit()]
        return hits[0] if hits else None

    def _check(self, kind: str, op: str, path: str, record: str = "", **fields: Any) -> None:
        """Count a call of ``kind``; when a fault fires, log it (as ``record``) and raise."""
        fault = self._injected(kind)
        if fault is not None:
            if record:
                self._do(record, None, path=path, error=fault.error, **fields)
            raise _err(op, path, fault.error)

    def _open(self, path: str, *, writable: bool) -> MemoryFile:
        with self._lock:
            ino = self._existing("open", path)
            if writable and isinstance(self._disk.nodes[ino], _Dir):
                raise _err("open", path, errno.EISDIR)
            self._check("open", "open", path)
            return MemoryFile(self, ino, path, writable)

    def _split(self, op: str, path: str) -> list[str]:
        if not path:
            raise _err(op, path, errno.ENOENT)
        return [c for c in posixpath.normpath(posixpath.join("/", path)).split("/") if c]

    def _find(self, op: str, path: str, report: str | None = None) -> tuple[int, str, int | None]:
        """(parent directory, name, inode or None) of ``path``; ``/`` is its own parent.
        Errors name ``report`` (default: ``path``)."""
        where = path if report is None else report
        if not path:
            raise _err(op, where, errno.ENOENT)
        parts = self._split(op, path)
        if not parts:
            return _ROOT, "", _ROOT
        folder = _ROOT
        for part in parts[:-1]:
            child = self._dir(folder).cur.get(part)
            if child is None:
                raise _err(op, where, errno.ENOENT)
            if not isinstance(self._disk.nodes[child], _Dir):
                raise _err(op, where, errno.ENOTDIR)
            folder = child
        ino = self._dir(folder).cur.get(parts[-1])
        if ino is not None and path.endswith("/") and isinstance(self._disk.nodes[ino], _File):
            raise _err(op, where, errno.ENOTDIR)
        return folder, parts[-1], ino

    def _existing(self, op: str, path: str) -> int:
        ino = self._find(op, path)[2]
        if ino is None:
            raise _err(op, path, errno.ENOENT)
        return ino

    def _dir(self, ino: int) -> _Dir:
        return self._disk.dir(ino)

    def _entries(self, ino: int) -> dict[str, int] | None:
        node = self._disk.nodes[ino]
        return node.cur if isinstance(node, _Dir) else None

    def _below(self, folder: int, ancestor: int) -> bool:
        """Whether directory ``folder`` is ``ancestor`` or inside it (current names)."""
        parents = {
            c: d for d, n in self._disk.nodes.items() if isinstance(n, _Dir) for c in n.cur.values()
        }
        while folder != ancestor:
            if folder not in parents or folder == _ROOT:
                return False
            folder = parents[folder]
        return True


# -- shared mappings (the model of storage.fileio.OsSharedMap) --------------------------------

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

    def __init__(self, fs: MemoryFileSystem, ino: int, path: str, size: int, writable: bool):
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
