"""Locks that are free in a forked child.

``os.fork`` copies a held ``threading.Lock`` into the child as held, and the thread that
would release it does not exist there: the child's first read would wait forever on a lock
a reading thread of the parent held at the fork. Every lock a read, an append or a look
takes is therefore guarded here: before a fork the forking thread takes them all, outer
ranks first (the order the code nests them), and after it releases them in parent and
child. The child then starts from state no thread was halfway through changing.

The ranks follow the nesting: a readonly view's look (``OUTER``) takes the log's lock
(``LOG``); under that come the compression pipeline's queue (``QUEUE``) and the leaves,
which are taken alone for a few statements (``LEAF``: caches, the catalog's reader counts,
the group commit's mutex, a sparse index's rebuild). Locks of one rank never nest.
"""

from __future__ import annotations

import os
import weakref
from typing import Final, Protocol, TypeVar

OUTER: Final = 0
LOG: Final = 1
QUEUE: Final = 2
LEAF: Final = 3


class _Lock(Protocol):
    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...
    def release(self) -> None: ...


# One set per rank: a lock is forgotten with its owner (weak references).
_ranks: Final[tuple[weakref.WeakSet[_Lock], ...]] = tuple(
    weakref.WeakSet() for _ in range(LEAF + 1)
)
_held: list[_Lock] = []
L = TypeVar("L", bound=_Lock)


def guard(lock: L, rank: int) -> L:
    """Keep ``lock`` free across forks (taken at ``rank`` before one); returns it."""
    _ranks[rank].add(lock)
    return lock


def _before_fork() -> None:
    for rank in _ranks:
        # One C call copies the set: iterating the WeakSet runs Python code between items,
        # and a lock another thread guards meanwhile ends the handler with "Set changed
        # size during iteration" (the fork then goes ahead without the remaining locks).
        for ref in rank.data.copy():  # type: ignore[attr-defined]
            lock = ref()
            if lock is not None:
                lock.acquire()
                _held.append(lock)


def _after_fork() -> None:
    while _held:
        _held.pop().release()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork)
