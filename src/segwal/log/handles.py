"""Read handles of segments, kept open between reads (bounded, least recently used).

A point read used to open, fstat and close its segment file each time. The catalog keeps a
few handles open and lends them to readers (``pread`` needs no position, so readers share
one). A handle belongs to the object that names its segment for a reader (a sealed
segment's ``SegmentState``, the writer of the active segment, a readonly view's tail), not
to a path: a file rewritten by a rewind, or seen again by a readonly view's new plan, gets a
new object and so a new handle, and the old one goes when the catalog forgets it. The
active segment grows and may be cut after a failed barrier, but always in place (the same
file), so a handle on it reads what a fresh open would; a reader bounds its reads by its
snapshot either way.
A handle in use is never closed under its reader: evicted or forgotten, it is closed when
the last reader gives it back. Forgetting a retired segment closes its handle, so the file's
space is freed when the file is deleted.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable

from segwal.storage.fileio import FileHandle, FileSystem
from segwal.storage.forklocks import LEAF, guard

LIMIT = 32  # handles kept open while unused; readers in flight may hold more


class Loan:
    """One handle lent to readers: its segment's object, how many use it, and whether it was
    let go."""

    __slots__ = ("dead", "handle", "path", "token", "users")

    def __init__(self, token: object, path: str, handle: FileHandle) -> None:
        self.token = token  # None: not cached, closed when given back
        self.path = path
        self.handle = handle
        self.users = 1
        self.dead = token is None


class HandleCache:
    def __init__(self, fs: FileSystem, limit: int = LIMIT) -> None:
        self._fs = fs
        self._limit = limit
        self._lock = guard(threading.Lock(), LEAF)
        self._loans: OrderedDict[int, Loan] = OrderedDict()  # id(token) -> its loan
        self._closed = False

    def take(self, path: str, token: object) -> Loan:
        """A handle on ``path``: cached for the segment object ``token``, fresh for None."""
        if token is None:
            return Loan(None, path, self._fs.open_read(path))
        key = id(token)
        with self._lock:
            loan = self._loans.get(key)
            if loan is not None and loan.token is token:
                loan.users += 1
                self._loans.move_to_end(key)
                return loan
        handle = self._fs.open_read(path)  # outside the lock: other readers go on
        spare: list[FileHandle] = []
        with self._lock:
            loan = self._loans.get(key)
            if self._closed:
                return Loan(None, path, handle)
            if loan is not None and loan.token is token:  # another reader opened it first
                loan.users += 1
                spare.append(handle)
            else:
                loan = Loan(token, path, handle)
                self._loans[key] = loan
                spare.extend(self._evict_locked())
        _close_all(spare)
        return loan

    def give(self, loan: Loan) -> None:
        """A reader is done with ``loan``'s handle."""
        with self._lock:
            loan.users -= 1
            if loan.dead:
                spare = [loan.handle] if loan.users == 0 else []
            else:
                spare = self._evict_locked()
        _close_all(spare)

    def keep_only(self, tokens: Iterable[object]) -> None:
        """Let go of the handles of every object not in ``tokens`` (the catalog changed)."""
        kept = {id(s) for s in tokens}
        self._let_go(lambda key, _loan: key not in kept)

    def forget(self, paths: set[str]) -> None:
        """Let go of the handles of segments at ``paths`` (dropped or retired)."""
        self._let_go(lambda _key, loan: loan.path in paths)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._let_go(lambda _key, _loan: True)

    def _let_go(self, doomed: Callable[[int, Loan], bool]) -> None:
        spare: list[FileHandle] = []
        with self._lock:
            for key, loan in list(self._loans.items()):
                if doomed(key, loan):
                    del self._loans[key]
                    loan.dead = True
                    if loan.users == 0:
                        spare.append(loan.handle)
        _close_all(spare)

    def _evict_locked(self) -> list[FileHandle]:
        """Unused handles past the limit, least recently used first (lock held)."""
        spare: list[FileHandle] = []
        excess = len(self._loans) - self._limit
        if excess <= 0:
            return spare
        for key, loan in list(self._loans.items()):
            if excess <= 0:
                break
            if loan.users == 0:
                del self._loans[key]
                loan.dead = True
                spare.append(loan.handle)
                excess -= 1
        return spare

    def __len__(self) -> int:
        return len(self._loans)


def _close_all(handles: list[FileHandle]) -> None:
    for handle in handles:
        handle.close()
