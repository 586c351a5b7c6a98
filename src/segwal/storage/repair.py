"""Carrying out a recovery plan: quarantine, cut, remove, finish an interrupted rewind.

``storage.recovery.plan`` decides; this module acts, in the order ``docs/DURABILITY.md``
gives: move later segments aside, cut the damaged tail (keeping a quarantine copy in
"truncate" mode), drop leftover temp files, remove segments below the checkpoint, finish an
interrupted ``truncate_after``; each step is durable before the next relies on it.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from segwal.format.naming import quarantine_name
from segwal.storage.coding import PLAIN, Coding
from segwal.storage.fileio import FileSystem
from segwal.storage.index import remove as remove_index
from segwal.storage.meta import store as store_meta
from segwal.storage.recovery import Plan, SegmentState, scanned_state
from segwal.storage.segment import read_header
from segwal.storage.tailscan import scan_tail
from segwal.storage.truncation import rewrite_prefix
from segwal.types import Cut

_COPY_CHUNK = 1 << 20


@dataclass(slots=True, kw_only=True)
class Repair:
    """What carrying out a plan did."""

    cuts: list[Cut] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    removed_temp_files: list[str] = field(default_factory=list)
    removed_obsolete: list[str] = field(default_factory=list)
    rewound_to: int | None = None


def carry_out(fs: FileSystem, plan: Plan, mode: str, coding: Coding = PLAIN) -> Repair:
    """Make the directory match the plan; the caller has checked the mode allows it.

    An unfinished rewind that must re-encode a compressed or encrypted batch needs the
    codec and key: their absence is raised here, before anything is changed.
    """
    rewind = plan.meta.truncate_after
    if rewind is not None and plan.segments and plan.segments[-1].last_lsn > rewind:
        coding.check_rewrite(plan.segments[-1].header, plan.segments[-1].path)
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
    if damage is not None and not plan.has_meta and not plan.segments and damage.lsn > 1:
        # "truncate" moved every segment aside and the log restarts past LSN 1: a log
        # without META must start at LSN 1, so the new start is stored first (as a
        # checkpoint would store it) before any new segment exists.
        plan.meta = plan.meta.with_(first_lsn=damage.lsn)
        store_meta(fs, directory, plan.meta)
        plan.has_meta = True
    for path in plan.temp_files:
        fs.unlink(path)
        repair.removed_temp_files.append(path)
    if plan.temp_files:
        fs.sync_dir(directory, "recover.temp")
    _finish_truncations(fs, plan, repair, coding)
    return repair


def _finish_truncations(fs: FileSystem, plan: Plan, repair: Repair, coding: Coding) -> None:
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
        plan.segments[-1] = rewrite_prefix(fs, directory, plan.segments[-1], rewind, coding)
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
