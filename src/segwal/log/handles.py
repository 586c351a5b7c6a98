"""Read handles of sealed segments, kept open between reads (bounded, least recently used).

A point read used to open, fstat and close its segment file each time. Sealed segments never
change, so the catalog keeps a few handles open and lends them to readers (``pread`` needs
no position, so readers share one). A handle belongs to one ``SegmentState`` object, not to
a path: a file rewritten by a rewind, or seen again by a readonly view's new plan, gets a
new state and so a new handle, and the old one goes when the catalog forgets its state.
A handle in use is never closed under its reader: evicted or forgotten, it is closed when
the last reader gives it back. Forgetting a retired segment closes its handle, so the file's
space is freed when the file is deleted.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable

from segwal.storage.fileio import FileHandle, FileSystem
from segwal.storage.recovery import SegmentState

LIMIT = 32  # handles kept open while unused; readers in flight may hold more


class Loan:
    """One handle lent to readers: its state, how many use it, and whether it was let go."""

    __slots__ = ("dead", "handle", "state", "users")

    def __init__(self, state: SegmentState | None, handle: FileHandle) -> None:
        self.state = state  # None: not cached, closed when given back
        self.handle = handle
        self.users = 1
        self.dead = state is None


class HandleCache:
    def __init__(self, fs: FileSystem, limit: int = LIMIT) -> None:
        self._fs = fs
        self._limit = limit
        self._lock = threading.Lock()
        self._loans: OrderedDict[int, Loan] = OrderedDict()  # id(state) -> its loan
        self._closed = False

    def take(self, path: str, state: SegmentState | None) -> Loan:
        """A handle on ``path``: cached when ``state`` is a sealed segment's, else fresh."""
        if state is None or state.seal is None:
            return Loan(None, self._fs.open_read(path))
        key = id(state)
        with self._lock:
            loan = self._loans.get(key)
            if loan is not None and loan.state is state:
                loan.users += 1
                self._loans.move_to_end(key)
                return loan
        handle = self._fs.open_read(path)  # outside the lock: other readers go on
        spare: list[FileHandle] = []
        with self._lock:
            loan = self._loans.get(key)
            if self._closed:
                return Loan(None, handle)
            if loan is not None and loan.state is state:  # another reader opened it first
                loan.users += 1
                spare.append(handle)
            else:
                loan = Loan(state, handle)
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

    def keep_only(self, states: Iterable[SegmentState]) -> None:
        """Let go of the handles of every state not in ``states`` (the catalog changed)."""
        kept = {id(s) for s in states}
        self._let_go(lambda key, _loan: key not in kept)

    def forget(self, paths: set[str]) -> None:
        """Let go of the handles of segments at ``paths`` (dropped or retired)."""
        self._let_go(lambda _key, loan: loan.state is not None and loan.state.path in paths)

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
