"""The operation log and fault injection of :class:`~segwal.testing.memfs.MemoryFileSystem`.

Every mutating call is applied to the disk model and appended to the log (with the action
that replays it); notes mark what a harness acknowledged; faults armed by ``fail`` fire on
the nth matching call. A mixin of ``MemoryFileSystem``, which sets these attributes.
"""

from __future__ import annotations

import errno
import os
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from segwal.errors import StorageError
from segwal.testing.nodes import _Disk
from segwal.testing.records import FAULT_KINDS, Fault, Op

_Action = tuple[Callable[..., None], tuple[Any, ...]]


def _err(op: str, path: str, code: int) -> StorageError:
    return StorageError(op, path, OSError(code, os.strerror(code)))


class OpLog:
    """The log, notes and faults; mixed into ``MemoryFileSystem``."""

    _lock: threading.RLock
    _disk: _Disk
    _origin: _Disk
    _ops: list[Op]
    _actions: list[_Action | None]
    calls: Counter[str]
    faults: list[Fault]
    # set by MemoryFileSystem too, and used by its files (testing/memfile.py)
    _locks: dict[int, dict[Any, bool]]  # their MemoryFile holders
    skip_sync_sites: set[str]
    sync_counts: Counter[str]
    writeback_starts: list[tuple[str, int, int]]

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

    # -- internals -----------------------------------------------------------------------

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
