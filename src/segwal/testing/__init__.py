"""Crash-testing tools: an in-memory file system that records, forgets and fails.

:class:`MemoryFileSystem` implements the :class:`segwal.storage.fileio.FileSystem` seam in memory.
It answers like :class:`~segwal.storage.fileio.OsFileSystem` (same results, same
:class:`~segwal.errors.StorageError` with the same ``errno``) and also tracks what a power
loss would keep, under the fault model of the reliability guide:

* Writes and truncates of a file stay *pending* until a ``sync`` of that file completes.
  A pending write is cut at 512-byte sector boundaries into pieces that persist or not
  independently; a pending truncate persists or not as a whole.
* Creates, renames and unlinks stay pending until ``sync_dir`` of their directory. Each
  persists or not as a whole, so a rename is atomic: old name or new, never neither. A
  rename between two directories becomes durable when either of them is synced.
* Data survives only through names: an inode is in a crash image when a persisted name
  reaches it, so a renamed file keeps its content.
* Past the durable end of a file, a piece that did not persist may still be inside the
  file (the size reached the disk before the data): it reads as zeros or as garbage.
* A barrier that raised covers nothing and later barriers are not trusted for what it
  should have covered: the operations pending at a failed ``sync`` (or ``sync_dir``) stay
  pending for ever, so they may or may not survive any later crash. Operations made after
  the failure become durable at the next successful barrier as usual.

Every mutating call is recorded in :attr:`MemoryFileSystem.ops`, together with the notes a
harness adds (``fs.mark_ack(lsn)``). :meth:`MemoryFileSystem.replay` rebuilds the file
system as of any operation index, and :meth:`MemoryFileSystem.crash_states` lists the
disks a power loss could leave at that moment::

    fs = MemoryFileSystem()
    run_workload(fs)                           # calls fs.mark_ack(lsn) when acknowledged
    for k, state in fs.replays():              # the state after ops[:k], k = 0..op_count
        acked = state.notes("ack")
        for image in state.crash_states(seed=k):
            check_recovery(image, acked)       # each image is a fresh, fully durable fs

``replay(k)`` gives one state; ``replays()`` walks them all in one pass. To crash only at
barriers, keep the k where ``fs.ops[k - 1].kind`` is ``"sync"`` or ``"sync_dir"``. To
crash during recovery, run it on an image: the image records its own log from there.

Faults: ``fs.fail("write", nth=3, error=errno.ENOSPC, short=100)`` and
``MemoryFileSystem(skip_sync_sites={"append"})`` (a skipped barrier does nothing).
Crash images, forks and replays start with no faults armed and no open handles or locks;
replays and forks keep ``skip_sync_sites``, images do not.

Known differences from :class:`~segwal.storage.fileio.OsFileSystem`: a handle on a directory
reports size 4096 (as on ext4); symbolic links, permissions and hard links do not exist;
``..`` is resolved lexically; relative paths are relative to ``/``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import random
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from segwal.errors import StorageError
from segwal.storage.fileio import Buffer, Entry

__all__ = [
    "FAULT_KINDS",
    "FILLS",
    "SECTOR",
    "Fault",
    "MemoryFile",
    "MemoryFileSystem",
    "Op",
    "candidate_subsets",
]

SECTOR: Final = 512
"""Pending writes persist in pieces cut at multiples of this offset."""

FILLS: Final = ("clean", "zeros", "garbage")
"""How unpersisted pieces past the durable end read: absent (the size did not grow for
them), or inside the file as zeros, or inside the file as garbage."""

FAULT_KINDS: Final = frozenset(
    {"write", "read", "stat", "truncate", "sync", "sync_dir", "create", "open"}
    | {"rename", "unlink", "mkdir", "list", "lock"}
)

_ROOT: Final = 0
_NONE: Final = -1
_DIR_SIZE: Final = 4096
_GARBAGE: Final = random.Random(0x5E6A1).randbytes(4096)


def _err(op: str, path: str, code: int) -> StorageError:
    return StorageError(op, path, OSError(code, os.strerror(code)))


def _garbage(start: int, size: int) -> bytes:
    off = start % len(_GARBAGE)
    return (_GARBAGE * ((off + size) // len(_GARBAGE) + 1))[off : off + size]


def _pieces(offset: int, size: int) -> list[tuple[int, int]]:
    out = []
    start, end = offset, offset + size
    while start < end:
        stop = min(end, (start // SECTOR + 1) * SECTOR)
        out.append((start, stop))
        start = stop
    return out


def _put(buf: bytearray, offset: int, data: bytes) -> None:
    if offset > len(buf):
        buf.extend(bytes(offset - len(buf)))
    buf[offset : offset + len(data)] = data


def _resize(buf: bytearray, size: int) -> None:
    if size < len(buf):
        del buf[size:]
    else:
        buf.extend(bytes(size - len(buf)))


def _clip(spans: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    return [(s, min(e, size)) for s, e in spans if s < size]


@dataclass(frozen=True, slots=True)
class Op:
    """One recorded operation; ``fs.ops[k]`` has ``index == k``.

    ``kind`` is one of ``mkdir create lock write truncate sync sync_dir rename unlink
    note`` (``lock`` only when the call created the lock file). ``length`` is the byte
    count of a write or the size of a truncate; ``target`` the destination of a rename;
    ``site`` the call site of a barrier; ``label`` and ``value`` those of a note.
    ``error`` is the errno of an injected fault (the operation failed; a short write
    still applied ``data``), and ``skipped`` marks a barrier whose
    site was in ``skip_sync_sites``.
    """

    index: int
    kind: str
    path: str = ""
    offset: int = 0
    length: int = 0
    data: bytes = b""
    target: str = ""
    site: str = ""
    label: str = ""
    value: object = None
    error: int | None = None
    skipped: bool = False


@dataclass(slots=True)
class Fault:
    """An armed fault: the ``nth`` call of ``kind`` from now (and ``times - 1`` more after
    it; ``times=None`` for ever) raises ``StorageError`` with ``error``. For writes,
    ``short`` bytes of the data are applied first (they stay pending, like any write)."""

    kind: str
    nth: int = 1
    error: int = errno.EIO
    short: int | None = None
    times: int | None = 1
    calls: int = 0
    fired: int = 0

    def hit(self) -> bool:
        self.calls += 1
        if self.calls < self.nth or (self.times is not None and self.fired >= self.times):
            return False
        self.fired += 1
        return True


class _FilePend:
    """A pending write (``data`` set) or truncate (``data`` None) of a file."""

    __slots__ = ("data", "doomed", "forced", "offset", "seq", "size")

    def __init__(self, seq: int, offset: int, data: bytes | None, size: int) -> None:
        self.seq, self.offset, self.data, self.size = seq, offset, data, size
        self.forced = False  # made durable by a later barrier
        self.doomed = False  # pending at a failed barrier: never forced

    def copy(self) -> _FilePend:
        new = _FilePend(self.seq, self.offset, self.data, self.size)
        new.forced, new.doomed = self.forced, self.doomed
        return new


class _NamePend:
    """A pending create (no src), unlink (no dst) or rename, shared by both directories."""

    __slots__ = ("doomed", "dst", "dst_name", "forced", "ino", "seq", "src", "src_name")

    def __init__(self, seq: int, src: int, sname: str, dst: int, dname: str, ino: int) -> None:
        self.seq, self.src, self.src_name, self.dst, self.dst_name = seq, src, sname, dst, dname
        self.ino = ino
        self.forced = False
        self.doomed = False

    def copy(self) -> _NamePend:
        new = _NamePend(self.seq, self.src, self.src_name, self.dst, self.dst_name, self.ino)
        new.forced, new.doomed = self.forced, self.doomed
        return new

    def effect(self, entries: dict[str, int], directory: int) -> None:
        if self.src == directory:
            entries.pop(self.src_name, None)
        if self.dst == directory:
            entries[self.dst_name] = self.ino


class _File:
    __slots__ = ("base", "cur", "pend")

    def __init__(self, content: bytes = b"") -> None:
        self.base: bytes | bytearray = content  # durable content (copy on write)
        self.cur: bytes | bytearray = content  # what reads see
        self.pend: list[_FilePend] = []

    def mutable(self) -> bytearray:
        if not isinstance(self.cur, bytearray):
            self.cur = bytearray(self.cur)
        return self.cur


class _Dir:
    __slots__ = ("base", "cur", "pend")

    def __init__(self, entries: dict[str, int] | None = None) -> None:
        self.base: dict[str, int] = dict(entries or {})
        self.cur: dict[str, int] = dict(entries or {})
        self.pend: list[_NamePend] = []


_Node = _File | _Dir
_Action = tuple[Callable[..., None], tuple[Any, ...]]
_State = tuple[dict[int, _Node], int, int]


def _copy_nodes(nodes: dict[int, _Node]) -> dict[int, _Node]:
    shared: dict[int, _NamePend] = {}
    out: dict[int, _Node] = {}
    for ino, node in nodes.items():
        if isinstance(node, _File):
            new = _File(bytes(node.base))
            if node.cur is not node.base:
                new.cur = bytes(node.cur)
            new.pend = [p.copy() for p in node.pend]
            out[ino] = new
        else:
            folder = _Dir(node.cur)
            folder.base = dict(node.base)
            for p in node.pend:
                if id(p) not in shared:
                    shared[id(p)] = p.copy()
                folder.pend.append(shared[id(p)])
            out[ino] = folder
    return out


def _walk(
    entries_of: Callable[[int], dict[str, int] | None], root: int, prefix: str
) -> Iterator[tuple[str, int, bool]]:
    """(path, inode, is_dir) of everything below ``root``; a directory before its content."""
    stack, seen = [(prefix, root)], {root}
    while stack:
        base, folder = stack.pop()
        for name, ino in sorted((entries_of(folder) or {}).items()):
            path = f"{base}/{name}"
            is_dir = entries_of(ino) is not None
            yield path, ino, is_dir
            if is_dir and ino not in seen:
                seen.add(ino)
                stack.append((path, ino))


def _fingerprint(items: Iterable[tuple[str, bytes | None]]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for path, digest in sorted(items, key=lambda item: item[0]):
        kind = b"D" if digest is None else b"F" + digest
        h.update(path.encode("utf-8", "surrogateescape") + b"\0" + kind + b"\n")
    return h.hexdigest()


def _digest(content: bytes | bytearray) -> bytes:
    return hashlib.blake2b(content, digest_size=16).digest()


def candidate_subsets(
    n: int,
    *,
    exhaustive_limit: int = 10,
    random_subsets: int = 32,
    rng: random.Random | None = None,
) -> list[tuple[bool, ...]]:
    """The subsets of ``n`` pending units to persist, as masks.

    Every subset when ``n <= exhaustive_limit``; otherwise (without repeats) each prefix
    (from none to all), each all-but-one, each single unit and ``random_subsets`` random
    subsets drawn from ``rng`` (default: seeded with 0).
    """
    if n <= exhaustive_limit:
        return [tuple(bool(m >> i & 1) for i in range(n)) for m in range(1 << n)]
    rng = rng or random.Random(0)
    out: dict[tuple[bool, ...], None] = {}
    for i in range(n + 1):
        out.setdefault(tuple(j < i for j in range(n)))
    for i in range(n):
        out.setdefault(tuple(j != i for j in range(n)))
        out.setdefault(tuple(j == i for j in range(n)))
    for _ in range(random_subsets):
        out.setdefault(tuple(rng.random() < 0.5 for _ in range(n)))
    return list(out)


class _Imager:
    """Builds crash images from one file system's pending state."""

    def __init__(self, nodes: dict[int, _Node]) -> None:
        self.nodes = nodes
        # Only inodes some crash image could reach matter; dead ones add no units.
        live, stack = {_ROOT}, [_ROOT]
        while stack:
            node = nodes[stack.pop()]
            if isinstance(node, _Dir):
                names = {*node.base.values(), *node.cur.values(), *(p.ino for p in node.pend)}
                stack.extend(names - live)
                live |= names
        self.pieces: dict[int, list[tuple[int, int]]] = {}
        spans: dict[int, tuple[int, int, _FilePend | _NamePend]] = {}
        for ino in live:
            for p in nodes[ino].pend:
                if not p.forced:
                    span = len(self._pieces(p)) if isinstance(p, _FilePend) else 1
                    spans[id(p)] = (p.seq, span, p)
        self.first: dict[int, int] = {}
        self.count = 0
        for _, span, p in sorted(spans.values(), key=lambda item: item[0]):
            self.first[id(p)] = self.count
            self.count += span
        self.units_of = {
            ino: [
                self.first[id(p)] + i
                for p in nodes[ino].pend
                if not p.forced
                for i in range(spans[id(p)][1])
            ]
            for ino in live
        }
        self.files: dict[tuple[int, tuple[bool, ...], str], bytes] = {}
        self.plain: set[tuple[int, tuple[bool, ...]]] = set()  # no fill can change these
        self.dirs: dict[tuple[int, tuple[bool, ...]], dict[str, int]] = {}
        self.digests: dict[int, bytes] = {}

    def _pieces(self, p: _FilePend) -> list[tuple[int, int]]:
        if id(p) not in self.pieces:
            size = 0 if p.data is None else len(p.data)
            self.pieces[id(p)] = _pieces(p.offset, size) if size else [(0, 0)]
        return self.pieces[id(p)]

    def _bits(self, ino: int, mask: Sequence[bool]) -> tuple[bool, ...]:
        return tuple(mask[u] for u in self.units_of[ino])

    def entries(self, ino: int, mask: Sequence[bool]) -> dict[str, int] | None:
        node = self.nodes[ino]
        if not isinstance(node, _Dir):
            return None
        key = (ino, self._bits(ino, mask))
        if key not in self.dirs:
            entries = dict(node.base)
            for p in node.pend:
                if p.forced or mask[self.first[id(p)]]:
                    p.effect(entries, ino)
            self.dirs[key] = entries
        return self.dirs[key]

    def content(self, ino: int, mask: Sequence[bool], fill: str) -> bytes:
        node = self.nodes[ino]
        assert isinstance(node, _File)
        bits = self._bits(ino, mask)
        clean = (ino, bits, "clean")
        if clean not in self.files:
            self.files[clean], sensitive = self._build(node, mask, "clean")
            if not sensitive:
                self.plain.add((ino, bits))
        if fill == "clean" or (ino, bits) in self.plain:
            return self.files[clean]
        key = (ino, bits, fill)
        if key not in self.files:
            self.files[key] = self._build(node, mask, fill)[0]
        return self.files[key]

    def _build(self, node: _File, mask: Sequence[bool], fill: str) -> tuple[bytes, bool]:
        """The content, and whether another fill could give a different one."""
        buf = bytearray(node.base)
        low = len(buf)  # below this the disk holds defined bytes
        written: list[tuple[int, int]] = []
        unsent: list[tuple[int, int]] = []
        sensitive = False
        for p in node.pend:
            first = self.first.get(id(p), 0)
            if p.data is None:
                if p.forced or mask[first]:
                    if p.size < len(buf):
                        low = min(low, p.size)
                        written, unsent = _clip(written, p.size), _clip(unsent, p.size)
                    else:
                        written.append((len(buf), p.size))
                    _resize(buf, p.size)
                continue
            for i, (s, e) in enumerate(self._pieces(p)):
                if p.forced or mask[first + i]:
                    _put(buf, s, p.data[s - p.offset : e - p.offset])
                    written.append((s, e))
                    continue
                sensitive = sensitive or e > low
                if fill != "clean":  # the size reached the disk, the data did not
                    unsent.append((s, e))
                    if e > len(buf):
                        _resize(buf, e)
        if fill == "garbage" and unsent and len(buf) > low:
            marks = bytearray(len(buf) - low)
            for spans, flag in ((unsent, 1), (written, 0)):
                for s, e in spans:
                    s, e = max(s, low), min(e, len(buf))
                    if s < e:
                        marks[s - low : e - low] = bytes([flag]) * (e - s)
            for run in re.finditer(rb"\x01+", marks):
                s, e = low + run.start(), low + run.end()
                buf[s:e] = _garbage(s, e - s)
        return bytes(buf), sensitive

    def image(self, mask: Sequence[bool], fill: str) -> tuple[str, Callable[[], MemoryFileSystem]]:
        """The fingerprint of the disk where the units in ``mask`` persisted, and a
        function that builds it."""
        dirs: dict[int, dict[str, int]] = {_ROOT: self.entries(_ROOT, mask) or {}}
        files: dict[int, bytes] = {}
        items: list[tuple[str, bytes | None]] = []
        for path, ino, is_dir in _walk(lambda i: self.entries(i, mask), _ROOT, ""):
            if is_dir:
                dirs[ino] = self.entries(ino, mask) or {}
                items.append((path, None))
                continue
            data = files[ino] = self.content(ino, mask, fill)
            if id(data) not in self.digests:
                self.digests[id(data)] = _digest(data)
            items.append((path, self.digests[id(data)]))
        info = f"persisted={''.join('1' if b else '0' for b in mask) or '-'} fill={fill}"
        return _fingerprint(items), lambda: MemoryFileSystem._from_image(dirs, files, info)


class MemoryFile:
    """An open file of a :class:`MemoryFileSystem`; a ``segwal.storage.fileio.FileHandle``."""

    __slots__ = ("_closed", "_fs", "_ino", "_path", "_writable")

    def __init__(self, fs: MemoryFileSystem, ino: int, path: str, writable: bool) -> None:
        self._fs, self._ino, self._path, self._writable = fs, ino, path, writable
        self._closed = False

    @property
    def path(self) -> str:
        return self._path

    def _node(self, op: str) -> _Node:
        if self._closed:
            raise _err(op, self._path, errno.EBADF)
        return self._fs._nodes[self._ino]

    def pwrite(self, data: Buffer, offset: int) -> None:
        payload = bytes(memoryview(data).cast("B"))
        fs = self._fs
        with fs._lock:
            self._node("write")
            if not self._writable:
                raise _err("write", self._path, errno.EBADF)
            if offset < 0:
                raise _err("write", self._path, errno.EINVAL)
            if not payload:
                return
            fault = fs._injected("write")
            if fault is not None:
                payload = payload[: max(0, fault.short or 0)]
            action = (MemoryFileSystem._p_write, (self._ino, offset, payload)) if payload else None
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
            action = (MemoryFileSystem._p_truncate, (self._ino, size))
            fs._do("truncate", action, path=self._path, length=size)

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
            action = (MemoryFileSystem._p_sync, (self._ino, code is None))
            fs._do("sync", action, path=self._path, site=site, error=code)
            if code is not None:
                raise _err("fdatasync", self._path, code)

    def close(self) -> None:
        with self._fs._lock:
            if not self._closed:
                self._closed = True
                self._fs._locks.get(self._ino, {}).pop(self, None)


class MemoryFileSystem:
    """An in-memory, recording, crashable ``segwal.storage.fileio.FileSystem``.

    Paths are strings, normalised with :mod:`posixpath`; relative paths are relative to
    ``/``. Thread-safe: one internal lock serialises every call. Inodes are never freed,
    so memory grows with everything ever written.
    """

    def __init__(self, *, skip_sync_sites: Iterable[str] = ()) -> None:
        self._lock = threading.RLock()
        self._nodes: dict[int, _Node] = {_ROOT: _Dir()}
        self._seq = 0
        self._next_ino = _ROOT + 1
        self._locks: dict[int, dict[MemoryFile, bool]] = {}
        self._ops: list[Op] = []
        self._actions: list[_Action | None] = []
        self._origin: _State = self._state()
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
            node = self._nodes[self._existing("list", path)]
            if not isinstance(node, _Dir):
                raise _err("list", path, errno.ENOTDIR)
            self._check("list", "list", path)
            return [
                Entry(n, isinstance(self._nodes[i], _File)) for n, i in sorted(node.cur.items())
            ]

    def make_dir(self, path: str) -> bool:
        """Create ``path`` and its parents, each made durable by ``sync_dir`` of its parent
        at site ``"make_dir"``, as ``OsFileSystem.make_dir`` does; True if it was created."""
        with self._lock:
            if not path:
                raise _err("mkdir", path, errno.ENOENT)
            try:
                if isinstance(self._nodes[self._existing("mkdir", path)], _Dir):
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
            action = (MemoryFileSystem._p_create, (folder, name, self._next_ino, True))
            self._do("mkdir", action, path=path)
            self.sync_dir(parent, "make_dir")
            return True

    def open_read(self, path: str) -> MemoryFile:
        return self._open(path, writable=False)

    def open_write(self, path: str) -> MemoryFile:
        return self._open(path, writable=True)

    def create(self, path: str) -> MemoryFile:
        with self._lock:
            folder, name, ino = self._find("create", path)
            if ino is not None:
                raise _err("create", path, errno.EEXIST)
            self._check("create", "create", path, "create")
            ino = self._next_ino
            self._do("create", (MemoryFileSystem._p_create, (folder, name, ino, False)), path=path)
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
            is_dir = isinstance(self._nodes[ino], _Dir)
            if is_dir and self._below(dst_dir, ino):
                raise _err("rename", src, errno.EINVAL)
            if old is not None and self._below(src_dir, old):
                raise _err("rename", src, errno.ENOTEMPTY)
            if old is not None:
                target = self._nodes[old]
                if not is_dir and isinstance(target, _Dir):
                    raise _err("rename", src, errno.EISDIR)
                if is_dir and not isinstance(target, _Dir):
                    raise _err("rename", src, errno.ENOTDIR)
                if isinstance(target, _Dir) and target.cur:
                    raise _err("rename", src, errno.ENOTEMPTY)
            self._check("rename", "rename", src, "rename", target=dst)
            action = (MemoryFileSystem._p_name, (src_dir, src_name, dst_dir, dst_name, ino))
            self._do("rename", action, path=src, target=dst)

    def unlink(self, path: str) -> None:
        with self._lock:
            folder, name, ino = self._find("unlink", path)
            if ino is None:
                raise _err("unlink", path, errno.ENOENT)
            if isinstance(self._nodes[ino], _Dir):
                raise _err("unlink", path, errno.EISDIR)
            self._check("unlink", "unlink", path, "unlink")
            action = (MemoryFileSystem._p_name, (folder, name, _NONE, "", ino))
            self._do("unlink", action, path=path)

    def sync_dir(self, path: str, site: str) -> None:
        with self._lock:
            self.sync_counts[site] += 1
            if site in self.skip_sync_sites:
                self._do("sync_dir", None, path=path, site=site, skipped=True)
                return
            ino = self._existing("fsync directory", path)
            if not isinstance(self._nodes[ino], _Dir):
                raise _err("fsync directory", path, errno.ENOTDIR)
            fault = self._injected("sync_dir")
            code = None if fault is None else fault.error
            action = (MemoryFileSystem._p_sync, (ino, code is None))
            self._do("sync_dir", action, path=path, site=site, error=code)
            if code is not None:
                raise _err("fsync directory", path, code)

    def lock(self, path: str, *, exclusive: bool) -> MemoryFile | None:
        """flock semantics: locks conflict between handles, also within one process."""
        with self._lock:
            folder, name, ino = self._find("open", path)
            if ino is not None and isinstance(self._nodes[ino], _Dir):
                raise _err("open", path, errno.EISDIR)
            self._check("lock", "lock", path)
            if ino is None:
                ino = self._next_ino
                self._do(
                    "lock", (MemoryFileSystem._p_create, (folder, name, ino, False)), path=path
                )
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
            return _Imager(self._nodes).count

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
            imager = _Imager(self._nodes)
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
                    key, build = imager.image(mask, fill)
                    if key not in seen:
                        seen.add(key)
                        out.append(build())
                        if limit is not None and len(out) >= limit:
                            return out
            return out

    def snapshot(self) -> MemoryFileSystem:
        """The disk after a power loss now in which nothing pending persisted."""
        with self._lock:
            imager = _Imager(self._nodes)
            return imager.image((False,) * imager.count, "clean")[1]()

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
            if not isinstance(self._nodes[ino], _Dir):
                raise _err("list", root, errno.ENOTDIR)
            prefix = posixpath.normpath(posixpath.join("/", root)).rstrip("/")
            out: dict[str, bytes | None] = {}
            for path, child, _ in _walk(self._entries, ino, prefix):
                node = self._nodes[child]
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
                child = fs._next_ino
                fs._p_create(folder, name, child, True)
            folder = child
        stack = [(path, folder)]
        while stack:
            real, folder = stack.pop()
            with os.scandir(real) as it:
                entries = sorted(it, key=lambda e: e.name)
            for entry in entries:
                ino = fs._next_ino
                if entry.is_dir(follow_symlinks=False):
                    fs._p_create(folder, entry.name, ino, True)
                    stack.append((entry.path, ino))
                elif entry.is_file(follow_symlinks=False):
                    fs._p_create(folder, entry.name, ino, False)
                    with open(entry.path, "rb") as f:
                        data = f.read()
                    if data:
                        fs._p_write(ino, 0, data)
        for ino in list(fs._nodes):
            fs._p_sync(ino, True)
        fs._origin = fs._state()
        return fs

    # -- internals -----------------------------------------------------------------------

    @classmethod
    def _from_image(
        cls, dirs: dict[int, dict[str, int]], files: dict[int, bytes], info: str
    ) -> MemoryFileSystem:
        fs = cls()
        fs._nodes = {ino: _Dir(entries) for ino, entries in dirs.items()}
        fs._nodes.update((ino, _File(content)) for ino, content in files.items())
        fs._next_ino = max(fs._nodes) + 1
        fs._origin = fs._state()
        fs.crash_info = info
        return fs

    def _state(self) -> _State:
        return _copy_nodes(self._nodes), self._seq, self._next_ino

    def _load(self, state: _State) -> None:
        self._nodes, self._seq, self._next_ino = _copy_nodes(state[0]), state[1], state[2]
        self._origin = state

    def _apply(self, op: Op, action: _Action | None) -> None:
        if action is not None:
            action[0](self, *action[1])
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
            if writable and isinstance(self._nodes[ino], _Dir):
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
            if not isinstance(self._nodes[child], _Dir):
                raise _err(op, where, errno.ENOTDIR)
            folder = child
        ino = self._dir(folder).cur.get(parts[-1])
        if ino is not None and path.endswith("/") and isinstance(self._nodes[ino], _File):
            raise _err(op, where, errno.ENOTDIR)
        return folder, parts[-1], ino

    def _existing(self, op: str, path: str) -> int:
        ino = self._find(op, path)[2]
        if ino is None:
            raise _err(op, path, errno.ENOENT)
        return ino

    def _dir(self, ino: int) -> _Dir:
        node = self._nodes[ino]
        assert isinstance(node, _Dir)
        return node

    def _entries(self, ino: int) -> dict[str, int] | None:
        node = self._nodes[ino]
        return node.cur if isinstance(node, _Dir) else None

    def _below(self, folder: int, ancestor: int) -> bool:
        """Whether directory ``folder`` is ``ancestor`` or inside it (current names)."""
        parents = {
            c: d for d, n in self._nodes.items() if isinstance(n, _Dir) for c in n.cur.values()
        }
        while folder != ancestor:
            if folder not in parents or folder == _ROOT:
                return False
            folder = parents[folder]
        return True

    # Primitive state changes, by inode: the actions the log replays.

    def _p_create(self, folder: int, name: str, ino: int, is_dir: bool) -> None:
        self._nodes[ino] = _Dir() if is_dir else _File()
        self._next_ino = max(self._next_ino, ino + 1)
        self._p_name(_NONE, "", folder, name, ino)

    def _p_name(self, src: int, src_name: str, dst: int, dst_name: str, ino: int) -> None:
        self._seq += 1
        pend = _NamePend(self._seq, src, src_name, dst, dst_name, ino)
        for folder in sorted({src, dst} - {_NONE}):
            node = self._dir(folder)
            pend.effect(node.cur, folder)
            node.pend.append(pend)

    def _p_write(self, ino: int, offset: int, data: bytes) -> None:
        node = self._nodes[ino]
        assert isinstance(node, _File)
        _put(node.mutable(), offset, data)
        self._seq += 1
        node.pend.append(_FilePend(self._seq, offset, data, len(data)))

    def _p_truncate(self, ino: int, size: int) -> None:
        node = self._nodes[ino]
        assert isinstance(node, _File)
        _resize(node.mutable(), size)
        self._seq += 1
        node.pend.append(_FilePend(self._seq, 0, None, size))

    def _p_sync(self, ino: int, ok: bool) -> None:
        """A barrier on a file or directory: force its pending operations, or doom them."""
        node = self._nodes[ino]
        for p in node.pend:
            if not p.forced:
                p.forced, p.doomed = ok and not p.doomed, p.doomed or not ok
        if isinstance(node, _Dir):
            touched = {ino} | {d for p in node.pend for d in (p.src, p.dst) if d != _NONE}
            for folder in touched:
                self._fold_dir(folder)
            return
        done = 0
        for p in node.pend:
            if not p.forced:
                break
            if not isinstance(node.base, bytearray):
                node.base = bytearray(node.base)
            if p.data is None:
                _resize(node.base, p.size)
            else:
                _put(node.base, p.offset, p.data)
            done += 1
        del node.pend[:done]

    def _fold_dir(self, ino: int) -> None:
        node = self._dir(ino)
        done = 0
        for p in node.pend:
            if not p.forced:
                break
            p.effect(node.base, ino)
            done += 1
        del node.pend[:done]
