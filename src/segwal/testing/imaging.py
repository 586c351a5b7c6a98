"""Crash imaging: the disks a power loss could leave, built from pending node state.

:class:`_Imager` numbers the pending units (sector pieces of writes, truncates, name
operations) that a crash may keep or drop, and builds the image of one subset of them
with one fill for unpersisted space; :func:`candidate_subsets` picks the subsets to try.
Images come out as plain directory and file tables, which
:class:`segwal.testing.memfs.MemoryFileSystem` turns into file systems.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from segwal.testing.nodes import (
    _ROOT,
    SECTOR,
    _Dir,
    _File,
    _FilePend,
    _NamePend,
    _Node,
    _put,
    _resize,
    _walk,
)

__all__ = ["FILLS", "Image", "candidate_subsets"]

FILLS: Final = ("clean", "zeros", "garbage")
"""How unpersisted pieces past the durable end read: absent (the size did not grow for
them), or inside the file as zeros, or inside the file as garbage."""

_GARBAGE: Final = random.Random(0x5E6A1).randbytes(4096)


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


def _clip(spans: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    return [(s, min(e, size)) for s, e in spans if s < size]


def _fingerprint(items: Iterable[tuple[str, bytes | None]]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for path, digest in sorted(items, key=lambda item: item[0]):
        kind = b"D" if digest is None else b"F" + digest
        h.update(path.encode("utf-8", "surrogateescape") + b"\0" + kind + b"\n")
    return h.hexdigest()


def _digest(content: bytes | bytearray) -> bytes:
    return hashlib.blake2b(content, digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class Image:
    """One crash image as tables: directory inode to entries, file inode to content, and
    which pending units persisted with which fill (``info``)."""

    dirs: dict[int, dict[str, int]]
    files: dict[int, bytes]
    info: str


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

    def image(self, mask: Sequence[bool], fill: str) -> tuple[str, Image]:
        """The fingerprint of the disk where the units in ``mask`` persisted, and its
        tables."""
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
        return _fingerprint(items), Image(dirs, files, info)
