"""What the in-memory file system records and arms: :class:`Op` and :class:`Fault`."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Final

__all__ = ["FAULT_KINDS", "Fault", "Op"]

FAULT_KINDS: Final = frozenset(
    {"write", "read", "stat", "truncate", "sync", "sync_dir", "create", "open"}
    | {"rename", "unlink", "mkdir", "list", "lock", "allocate"}
)


@dataclass(frozen=True, slots=True)
class Op:
    """One recorded operation; ``fs.ops[k]`` has ``index == k``.

    ``kind`` is one of ``mkdir create lock write truncate allocate sync sync_dir rename
    unlink note`` (``lock`` only when the call created the lock file). ``length`` is the byte
    count of a write, the size of a truncate or the bytes of an allocate (from ``offset``);
    ``target`` the destination of a rename; ``site`` the call site of a barrier; ``label``
    and ``value`` those of a note.
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
