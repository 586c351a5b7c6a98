"""The in-memory file system's nodes and their pending operations.

Shared by :mod:`segwal.testing.memfs` (which changes them) and
:mod:`segwal.testing.imaging` (which builds crash images from them); it imports neither.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final

SECTOR: Final = 512
"""Pending writes persist in pieces cut at multiples of this offset."""

_ROOT: Final = 0
_NONE: Final = -1


def _put(buf: bytearray, offset: int, data: bytes) -> None:
    if offset > len(buf):
        buf.extend(bytes(offset - len(buf)))
    buf[offset : offset + len(data)] = data


def _resize(buf: bytearray, size: int) -> None:
    if size < len(buf):
        del buf[size:]
    else:
        buf.extend(bytes(size - len(buf)))


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


class _Disk:
    """The node table of one file system and the primitive state changes on it, by
    inode: the actions the operation log replays."""

    __slots__ = ("next_ino", "nodes", "seq")

    def __init__(self, nodes: dict[int, _Node] | None = None) -> None:
        self.nodes: dict[int, _Node] = {_ROOT: _Dir()} if nodes is None else nodes
        self.seq = 0
        self.next_ino = max(self.nodes) + 1

    def copy(self) -> _Disk:
        new = _Disk(_copy_nodes(self.nodes))
        new.seq, new.next_ino = self.seq, self.next_ino
        return new

    def dir(self, ino: int) -> _Dir:
        node = self.nodes[ino]
        assert isinstance(node, _Dir)
        return node

    def create(self, folder: int, name: str, ino: int, is_dir: bool) -> None:
        self.nodes[ino] = _Dir() if is_dir else _File()
        self.next_ino = max(self.next_ino, ino + 1)
        self.name(_NONE, "", folder, name, ino)

    def name(self, src: int, src_name: str, dst: int, dst_name: str, ino: int) -> None:
        self.seq += 1
        pend = _NamePend(self.seq, src, src_name, dst, dst_name, ino)
        for folder in sorted({src, dst} - {_NONE}):
            node = self.dir(folder)
            pend.effect(node.cur, folder)
            node.pend.append(pend)

    def write(self, ino: int, offset: int, data: bytes) -> None:
        node = self.nodes[ino]
        assert isinstance(node, _File)
        _put(node.mutable(), offset, data)
        self.seq += 1
        node.pend.append(_FilePend(self.seq, offset, data, len(data)))

    def truncate(self, ino: int, size: int) -> None:
        node = self.nodes[ino]
        assert isinstance(node, _File)
        _resize(node.mutable(), size)
        self.seq += 1
        node.pend.append(_FilePend(self.seq, 0, None, size))

    def sync(self, ino: int, ok: bool) -> None:
        """A barrier on a file or directory: force its pending operations, or doom them."""
        node = self.nodes[ino]
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
        node = self.dir(ino)
        done = 0
        for p in node.pend:
            if not p.forced:
                break
            p.effect(node.base, ino)
            done += 1
        del node.pend[:done]
