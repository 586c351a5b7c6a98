"""Opening a log directory: the writer lock, carrying out the recovery plan, the first segment.

``recovery.plan`` decides; this module acts, in the order ``docs/DURABILITY.md`` gives:
move later segments aside, cut the damaged tail (keeping a quarantine copy in "truncate"
mode), drop leftover temp files, then make the tail and the directory durable before any
record in them is called durable.
"""

from __future__ import annotations

import os
import posixpath
import struct
import uuid
from dataclasses import dataclass, field

from segwal.errors import LockError
from segwal.fileio import FileHandle, FileSystem
from segwal.format import ZERO_DIGEST
from segwal.index import build as build_index
from segwal.index import remove as remove_index
from segwal.meta import store as store_meta
from segwal.naming import LOCK_NAME, quarantine_name
from segwal.recovery import Plan, SegmentState, scan_tail, scanned_state
from segwal.segment import SegmentWriter, read_header
from segwal.truncation import rewrite_prefix
from segwal.types import Cut

LOCK_LAYOUT = struct.Struct("<8sQQQ")
LOCK_MAGIC = b"SWLOCK01"
_COPY_CHUNK = 1 << 20
_MASK = (1 << 64) - 1


def take_lock(fs: FileSystem, directory: str) -> FileHandle:
    """Take the writer lock and publish this process's pid in it."""
    path = posixpath.join(directory, LOCK_NAME)
    handle = fs.lock(path, exclusive=True)
    if handle is None:
        raise LockError(directory, read_lock(fs, directory)[0])
    try:
        publish_durable(handle, 0)
    except BaseException:
        handle.close()  # or the lock stays held and every later open gets LockError
        raise
    return handle


def publish_durable(handle: FileHandle, durable_lsn: int, *, closed: bool = False) -> None:
    """Tell readers in other processes how far the log is durable (no barrier needed).

    A closed log publishes pid 0: everything in its files is durable. Otherwise readers trust
    only the published durable LSN, whether the writer is alive or was killed.
    """
    pid = 0 if closed else os.getpid()
    handle.pwrite(LOCK_LAYOUT.pack(LOCK_MAGIC, pid, durable_lsn, ~durable_lsn & _MASK), 0)


def read_lock(fs: FileSystem, directory: str) -> tuple[int | None, int | None]:
    """The (pid, durable LSN) a writer published (pid 0: closed), or Nones when unreadable."""
    path = posixpath.join(directory, LOCK_NAME)
    for _attempt in range(100):
        try:
            handle = fs.open_read(path)
        except OSError:
            return None, None
        try:
            raw = handle.pread(LOCK_LAYOUT.size, 0)
        finally:
            handle.close()
        if len(raw) < LOCK_LAYOUT.size:
            return None, None
        magic, pid, durable, check = LOCK_LAYOUT.unpack(raw)
        if magic != LOCK_MAGIC:
            return None, None
        if check == ~durable & _MASK:
            return pid, durable
        # A torn read of a concurrent update: read again.
    return None, None


@dataclass(slots=True, kw_only=True)
class Repair:
    """What carrying out a plan did."""

    cuts: list[Cut] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    removed_temp_files: list[str] = field(default_factory=list)
    removed_obsolete: list[str] = field(default_factory=list)
    rewound_to: int | None = None


def carry_out(fs: FileSystem, plan: Plan, mode: str) -> Repair:
    """Make the directory match the plan; the caller has checked the mode allows it."""
    repair = Repair()
    directory = plan.directory
    damage = plan.damage
    if plan.has_meta and (plan.obsolete or plan.meta.truncate_after is not None):
        # A killed writer's META rename may sit in the page cache only: make it durable
        # before deleting or rewriting anything on its strength.
        fs.sync_dir(directory, "open.sync_dir")
    if damage is not None:
        # Later segments go first, newest first, so a crash midway leaves a contiguous log.
        moved = list(reversed(plan.quarantine))
        if not damage.keep_prefix:
            moved.append(damage.path)
        for path in moved:
            target = _free_quarantine_name(fs, path)
            fs.rename(path, target)
            repair.quarantined.append(target)
        if moved:
            fs.sync_dir(directory, "recover.quarantine")
        if damage.keep_prefix:
            state = _damaged_state(fs, plan, damage.path)
            # The LSN expected at the cut: the damage may lie further on (a bad seal).
            lsn = state.last_lsn + 1
            repair.cuts.append(_cut(fs, state, lsn, damage.reason, keep=mode == "truncate"))
    for path in plan.temp_files:
        fs.unlink(path)
        repair.removed_temp_files.append(path)
    if plan.temp_files:
        fs.sync_dir(directory, "recover.temp")
    _finish_truncations(fs, plan, repair)
    return repair


def _finish_truncations(fs: FileSystem, plan: Plan, repair: Repair) -> None:
    """Remove segments below the checkpoint and finish an interrupted truncate_after."""
    directory = plan.directory
    for path in plan.obsolete:
        fs.unlink(path)
        remove_index(fs, path)
        repair.removed_obsolete.append(path)
    if plan.obsolete:
        fs.sync_dir(directory, "recover.obsolete")
    rewind = plan.meta.truncate_after
    if rewind is None:
        return
    if plan.segments and plan.segments[-1].last_lsn > rewind:
        plan.segments[-1] = rewrite_prefix(fs, directory, plan.segments[-1], rewind)
    plan.meta = plan.meta.with_(truncate_after=None)
    store_meta(fs, directory, plan.meta)
    repair.rewound_to = rewind


def _damaged_state(fs: FileSystem, plan: Plan, path: str) -> SegmentState:
    if plan.segments and plan.segments[-1].path == path:
        return plan.segments[-1]
    # A sealed segment with a bad seal ("truncate" mode): keep its valid prefix.
    handle = fs.open_read(path)
    try:
        header = read_header(handle)
        size = handle.size()
        scan = scan_tail(handle, header, size)
    finally:
        handle.close()
    state = scanned_state(path, header, size, scan, sealed=False)
    plan.segments.append(state)
    return state


def _cut(fs: FileSystem, state: SegmentState, lsn: int, reason: str, *, keep: bool) -> Cut:
    """Remove the bytes after the kept prefix; with ``keep``, copy them aside first."""
    length = state.size - state.end
    quarantine = None
    handle = fs.open_write(state.path)
    try:
        if keep and length:
            quarantine = _free_quarantine_name(fs, state.path)
            copy = fs.create(quarantine)
            try:
                for offset in range(state.end, state.size, _COPY_CHUNK):
                    chunk = handle.pread(min(_COPY_CHUNK, state.size - offset), offset)
                    copy.pwrite(chunk, offset - state.end)
                copy.sync("recover.quarantine_copy")
            finally:
                copy.close()
            # The copy must be durable under its name before the original bytes go.
            fs.sync_dir(posixpath.dirname(state.path), "recover.quarantine_copy")
        handle.truncate(state.end)
        # The cut must be durable before new frames go after it: a crash must not bring
        # the old bytes back behind new records.
        handle.sync("recover.truncate")
    finally:
        handle.close()
    state.size = state.end
    state.seal = None
    return Cut(
        path=state.path,
        offset=state.end,
        length=length,
        lsn=lsn,
        reason=reason,
        quarantine_path=quarantine,
    )


def _free_quarantine_name(fs: FileSystem, path: str) -> str:
    directory, name = posixpath.split(path)
    taken = {e.name for e in fs.list_dir(directory)}
    n = 1
    while quarantine_name(name, n) in taken:
        n += 1
    return posixpath.join(directory, quarantine_name(name, n))


def start_writer(
    fs: FileSystem,
    directory: str,
    segments: list[SegmentState],
    *,
    first_lsn: int,
    now_us: int,
    max_record_bytes: int,
) -> tuple[SegmentWriter, bool]:
    """The active segment's writer: the unsealed tail resumed, or a new segment.

    Returns the writer and whether a new segment was created.
    """
    tail = segments[-1] if segments else None
    if tail is not None and tail.seal is None:
        handle = fs.open_write(tail.path)
        index = tail.index if tail.index is not None else build_index(handle, tail.end)
        writer = SegmentWriter(
            fs,
            handle,
            tail.header,
            offset=tail.end,
            last_lsn=tail.last_lsn,
            min_ts=tail.min_ts,
            max_ts=tail.max_ts,
            index=index,
        )
        # Records a killed process left in the page cache are durable only after this.
        writer.handle.sync("open.sync")
        fs.sync_dir(directory, "open.sync_dir")
        return writer, False
    if tail is None:
        log_id, sequence, prev_digest = uuid.uuid4().bytes, 0, ZERO_DIGEST
    elif tail.last_lsn < tail.header.first_lsn:
        # A sealed segment with no record: replace it in place, as rotation would have.
        log_id = tail.header.log_id
        sequence = tail.header.sequence
        prev_digest = tail.header.prev_digest
        first_lsn = tail.header.first_lsn
    else:
        assert tail.seal is not None
        # A killed writer may have written this seal without its fdatasync: make it durable
        # before a next segment exists (every segment but the last must be sealed on disk).
        sealed = fs.open_write(tail.path)
        try:
            sealed.sync("open.sync")
        finally:
            sealed.close()
        log_id = tail.header.log_id
        sequence = tail.header.sequence + 1
        prev_digest = tail.seal.digest
        first_lsn = tail.last_lsn + 1
    writer = SegmentWriter.create(
        fs,
        directory,
        log_id=log_id,
        sequence=sequence,
        first_lsn=first_lsn,
        created_us=now_us,
        max_record_bytes=max_record_bytes,
        prev_digest=prev_digest,
    )
    return writer, True
