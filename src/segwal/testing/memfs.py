"""The in-memory, recording, crashable file system: :class:`MemoryFileSystem`.

See :mod:`segwal.testing` for the fault model it follows and how to use it; crash images
are built by :mod:`segwal.testing.imaging`.
"""

from __future__ import annotations

import errno
import os
import posixpath
import random
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

from segwal.errors import StorageError
from segwal.storage.fileio import Entry
from segwal.testing.imaging import (
    FILLS,
    Image,
    _digest,
    _fingerprint,
    _Imager,
    candidate_subsets,
)
from segwal.testing.memfile import MemoryFile
from segwal.testing.nodes import (
    _NONE,
    _ROOT,
    _Dir,
    _Disk,
    _File,
    _Node,
    _walk,
)
from segwal.testing.oplog import OpLog, _Action, _err
from segwal.testing.records import FAULT_KINDS, Fault, Op

__all__ = ["FAULT_KINDS", "Fault", "MemoryFile", "MemoryFileSystem", "Op"]


class MemoryFileSystem(OpLog):
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
        # (path, offset, length) of each start of writeback (MemoryFile.start_writeback).
        self.writeback_starts: list[tuple[str, int, int]] = []
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
