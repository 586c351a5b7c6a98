"""The compiled single append (``FastAppender``, format/_appender.c) of one writable log.

``Appender.append``'s fast path, the whole of it in one C call: the lock, the checks, the
stamp, the frame and its ``pwrite``, and the bookkeeping that ``SegmentWriter.write`` and
``GroupCommit.wrote`` do, written back into the log's own objects before the lock is let go
(so readers, rotation, truncation, close and fork see what they always saw). Here: building
it for a log (None on the pure path, where the Python fast path runs) and arming it for a
writer ``Appender._eligible`` approved. tests/test_fast_appender.py holds it to the Python
fast path and the general path.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import fields
from typing import TYPE_CHECKING, Any, Final, NoReturn

from segwal.errors import StorageError
from segwal.events import Synced
from segwal.format.encoder import DurableWait, FastAppender
from segwal.format.layout import FRAME_HEAD_SIZE, MAX_LSN, SEAL_SIZE
from segwal.log.arguments import MAX_TYPE
from segwal.log.commit import GroupCommit
from segwal.log.config import WalConfig
from segwal.log.publisher import Publisher
from segwal.log.state import LogState
from segwal.log.telemetry import FSYNC_BUCKETS
from segwal.storage.fileio import DIRECT_BLOCK, OsDirectFile, OsFile
from segwal.storage.index import CheckedIndex, SparseIndex
from segwal.storage.segment import SegmentWriter

if TYPE_CHECKING:
    from segwal.format._encode import FastAppender as CompiledAppender

# WalConfig's own clock: with it, the fast paths read the time themselves (no call through).
DEFAULT_CLOCK: Final = next(f.default for f in fields(WalConfig) if f.name == "clock")
# A one-record frame's bytes besides its payload.
RECORD_OVERHEAD: Final = FRAME_HEAD_SIZE + 4


def fields_of(obj: object, *names: str) -> dict[str, object] | None:
    """``obj.__dict__``, for the compiled fast path to read and write ``names`` in directly
    (a quarter of the generic attribute protocol's cost), unless a class attribute (a
    property, a slot) stands for one of them: then None, and it uses getattr/setattr."""
    if any(hasattr(type(obj), name) for name in names):
        return None
    found = getattr(obj, "__dict__", None)
    return found if type(found) is dict else None


def build(
    state: LogState, general: Callable[..., int], durable: Callable[[int], object] | None
) -> CompiledAppender | None:
    """The compiled fast path of ``state``'s log, unarmed; None on the pure path.
    ``general(payload, type)`` takes every append it does not (after the lock is let go);
    ``durable(lsn)``, with sync="always": the wait for an append's barrier (durable_wait)."""
    if FastAppender is None:
        return None
    config = state.config

    def failed(writer: SegmentWriter, exc: BaseException, wrap: bool) -> NoReturn:
        # Called under the lock: the log fails as on the Python path; a descriptor's
        # OSError becomes the StorageError naming the segment.
        if wrap and isinstance(exc, OSError):
            error: BaseException = StorageError("write", writer.path, exc)
            error.__cause__ = exc
            exc = error
        state.fail(exc)
        writer.discard_unsynced()
        raise exc

    return FastAppender(
        state,
        fields_of(state, "writer", "failure", "closed"),
        state.lock.acquire,
        state.lock.release,
        general,
        failed,
        durable,
        None if config.clock is DEFAULT_CLOCK else config.now_us,
        MAX_TYPE,
        MAX_LSN,
    )


def durable_wait(state: LogState, publisher: Publisher) -> Callable[[int], object]:
    """What a fast append of a sync="always" log calls after the lock is let go to wait for
    its barrier: the compiled DurableWait (format/_durable.c), which runs the group commit's
    solo barrier on an OsFile itself and calls back into the commit for everything else."""
    if DurableWait is None:  # FastAppender without DurableWait: an older build; never mixed
        return lambda lsn: state.commit.wait_durable(lsn, lead=True)
    telemetry = state.telemetry

    def synced(seconds: float) -> None:
        # Appender.barrier's end when the fsync was slow (the warning) or observers listen.
        telemetry.fsynced(seconds)
        if state._observers:
            state.emit(Synced(site="append.sync", seconds=seconds))

    def bind(commit: GroupCommit) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], Any]:
        hooks: dict[str, Any] = commit.hooks()
        hooks.update(synced=synced, sync_failed=sync_failed)
        # The publication in C only where it is the publisher's (not a test's replacement).
        own = hooks["publish"] == publisher.publish
        return vars(commit), vars(telemetry), hooks, publisher.binding() if own else None

    return DurableWait(
        vars(state), (OsFile, OsDirectFile), bind, FSYNC_BUCKETS, telemetry.slow_fsync_seconds
    )


def sync_failed(path: str, code: int) -> NoReturn:
    """The error OsFile.sync raises for a failed fdatasync (``code``: its errno)."""
    exc = OSError(code, os.strerror(code))
    raise StorageError("fdatasync", path, exc) from exc


def room(writer: SegmentWriter, segment_bytes: int) -> int:
    """The offset a fast append's payload may end at: the seal's room kept, and within a
    preallocated segment's allocation (a zero-filled step must never land on frames; a
    direct_io write's zero padding to its block's end must fit in it too)."""
    end = segment_bytes - RECORD_OVERHEAD - SEAL_SIZE
    if not writer.step:
        return end
    allocated = writer.allocated
    if writer.direct is not None:
        allocated -= allocated % DIRECT_BLOCK
    return min(end, allocated - RECORD_OVERHEAD)


def arm(fast: CompiledAppender, state: LogState, writer: SegmentWriter, limit: int) -> None:
    """Let the appends to ``writer`` go fast (under the lock); ``limit``: the log's
    max_record_bytes. A real file is written with pwrite on its descriptor in C; any other
    handle (the memfs) through its own pwrite, with the frame encoded in C. A direct_io
    writer's frame goes out as whole blocks: from C on a real file's O_DIRECT descriptor
    (format/_direct.c), through ``DirectTail.put`` otherwise."""
    handle = writer.handle
    direct = writer.direct
    if direct is not None:  # whole blocks: on the O_DIRECT descriptor, or DirectTail.put
        fd, pwrite = direct.fd, direct.put
    else:
        fd, pwrite = (handle.fd if isinstance(handle, OsFile) else -1), handle.pwrite
    commit = state.commit
    fast.arm(
        writer,
        fields_of(writer, "offset", "last_lsn", "max_ts"),
        writer.index,
        commit,
        fields_of(commit, "durable_lsn", "written_lsn", "_watchers"),
        fd,
        None if fd >= 0 else pwrite,
        writer.header.seed,
        writer.header.first_lsn,
        room(writer, state.config.segment_bytes),
        min(limit, writer.header.max_record_bytes),
        # The index's own class: its entry is added in C (no bytecode under the lock).
        type(writer.index) in (SparseIndex, CheckedIndex),
        direct,
    )
