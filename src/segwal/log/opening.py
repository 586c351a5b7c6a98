"""Opening a log: as its writer (recover, then resume or start the active segment) or as a
readonly view (look, never change), filling a ``LogState``.

The storage layer does each step (``storage.lockfile`` takes the lock, ``storage.recovery``
plans, ``storage.repair`` carries the plan out, ``storage.tail`` resumes or creates the
active segment); this module puts them in the order ``docs/DURABILITY.md`` gives and turns
the outcome into the ``RecoveryReport``.
"""

from __future__ import annotations

import errno
import posixpath
from dataclasses import replace

from segwal.errors import ContinuityError, CorruptionError, StorageError
from segwal.events import RecoveryCut
from segwal.log.encryption import KeysAtOpen
from segwal.log.state import LogState, log
from segwal.log.telemetry import event_extra
from segwal.storage.dictionaries import add as add_dictionary
from segwal.storage.fileio import FileHandle
from segwal.storage.lockfile import read_lock, take_lock
from segwal.storage.meta import store as store_meta
from segwal.storage.recovery import Plan, plan
from segwal.storage.repair import carry_out
from segwal.storage.tail import start_writer
from segwal.types import Cut, RecoveryReport

LOOKS = 10  # a readonly view looks again this often before it believes damage it sees


def open_writer(state: LogState) -> tuple[FileHandle, RecoveryReport, int]:
    """Take the lock, recover, and start the active segment.

    Returns the lock handle, the report, and the newest timestamp recovery found (appends
    never stamp below it).
    """
    fs, config, path = state.fs, state.config, state.path
    created = fs.make_dir(path)
    if not created:
        # A killed writer may have made the directory without its parent's fsync.
        fs.sync_dir(posixpath.dirname(posixpath.abspath(path)), "make_dir")
    # A wrong or missing key is refused before anything, LOCK included, is written.
    keys_at_open = KeysAtOpen(
        fs, path, config.encryption, own_ring=config.keys is not None, writing=True
    )
    lock_handle = take_lock(fs, path)
    try:
        # "truncate" asks for a log cut free of damage, so it scans what a clean close left;
        # the other modes would raise on such damage, which the reads name as well.
        found = plan(fs, path, trust_close=config.recovery != "truncate")
        if (ring := keys_at_open.under_lock(found)) is not None:
            # Before recovery acts: finishing a rewind may re-encode an encrypted batch.
            state.coding = replace(state.coding, keys=ring)
        damage = found.damage
        mode = config.recovery
        if damage is not None and (
            mode == "strict" or (mode == "tolerate_tail" and not damage.torn)
        ):
            raise damage.exception()
        repair = carry_out(fs, found, mode, state.coding)
        if found.meta.closed is not None and (repair.cuts or repair.quarantined):
            # The clean close's mark described bytes recovery has now cut or moved aside.
            found.meta = found.meta.with_(closed=None, tail=None)
            store_meta(fs, path, found.meta)
        kept_end = found.segments[-1].last_lsn if found.segments else None
        if kept_end is not None and found.meta.first_lsn > kept_end + 1:
            # What survived the damage ends below the checkpoint: no LSN can follow.
            raise ContinuityError(
                f"after recovery the log ends at LSN {kept_end}, below its checkpoint "
                f"(LSN {found.meta.first_lsn})",
                path=found.segments[-1].path,
                lsn=found.meta.first_lsn,
            )
        # With no segment left, the next one starts where the log's LSNs left off.
        first_lsn = max(
            found.meta.first_lsn,
            damage.lsn if damage is not None else 1,
            (repair.rewound_to or 0) + 1,
        )
        if not found.segments and found.has_meta and first_lsn > found.meta.first_lsn:
            # Nothing survived ("truncate" mode): the log restarts after the lost LSNs,
            # and its checkpoint must say so before the first new segment exists.
            found.meta = found.meta.with_(first_lsn=first_lsn)
            store_meta(fs, path, found.meta)
        now_us = config.now_us()  # one reading: KEYS and the new segment share a stamp
        keys = keys_at_open.ensure(found.log_id, now_us)
        if keys is not None:
            state.coding = replace(state.coding, keys=keys)
        if config.dictionary is not None:
            # Durable before start_writer or a rotation creates a segment that names it.
            add_dictionary(fs, path, config.dictionary)
        writer, new_segment = start_writer(
            fs,
            path,
            found.segments,
            first_lsn=first_lsn,
            now_us=now_us,
            max_record_bytes=config.max_record_bytes,
            coding=state.coding,
            log_id=None if keys is None else keys.log_id,
        )
    except BaseException:
        lock_handle.close()
        raise
    state.keys = keys
    state.meta = found.meta
    state.remember_rewinds()
    state.catalog.replace(s for s in found.segments if s.seal is not None and s.path != writer.path)
    state.writer = writer
    state.io["created"] += int(new_segment)
    last_ts = max((s.max_ts for s in found.segments), default=0)
    report = RecoveryReport(
        mode=mode,
        created=created or not found.segments,
        segments=len(state.catalog.sealed.states) + 1,
        first_lsn=state.first_lsn,
        last_lsn=writer.last_lsn,
        cuts=tuple(repair.cuts),
        quarantined=tuple(repair.quarantined),
        removed_temp_files=tuple(repair.removed_temp_files),
        removed_obsolete=tuple(repair.removed_obsolete),
        rewound_to=repair.rewound_to,
        foreign_files=tuple(found.foreign),
        sealed_tail=bool(found.segments) and found.segments[-1].seal is not None,
    )
    for cut in repair.cuts:
        log.warning(
            "recovery cut %d bytes from %s at offset %d (LSN %d): %s",
            cut.length,
            cut.path,
            cut.offset,
            cut.lsn,
            cut.reason,
            extra=event_extra(
                "recovery_cut",
                path,
                path=cut.path,
                offset=cut.offset,
                length=cut.length,
                lsn=cut.lsn,
                reason=cut.reason,
            ),
        )
        state.emit(RecoveryCut(cut=cut))
    for moved in repair.quarantined:
        log.warning(
            "recovery moved %s aside",
            moved,
            extra=event_extra("recovery_quarantine", path, path=moved),
        )
    state.recovery_cuts = len(repair.cuts) + len(repair.quarantined)
    return lock_handle, report, last_ts


def open_readonly(state: LogState) -> RecoveryReport:
    """Look at the log without changing it; a damaged tail is reported, not cut."""
    config = state.config
    opened = KeysAtOpen(
        state.fs, state.path, config.encryption, own_ring=config.keys is not None, writing=False
    )
    state.keys = opened.ring
    if opened.ring is not None:
        state.coding = replace(state.coding, keys=opened.ring)
    found = load_view(state)
    damage = found.damage
    cuts: tuple[Cut, ...] = ()
    if damage is not None:
        size = found.segments[-1].size if found.segments else 0
        cuts = (
            Cut(
                path=damage.path,
                offset=damage.offset,
                length=max(0, size - damage.offset),
                lsn=damage.lsn,
                reason=damage.reason,
            ),
        )
    return RecoveryReport(
        mode=state.config.recovery,
        segments=len(found.segments),
        first_lsn=state.first_lsn,
        last_lsn=state.last_lsn,
        cuts=cuts,
        foreign_files=tuple(found.foreign),
    )


def load_view(state: LogState, *, same_writer: bool = True) -> Plan:
    """Readonly: look at the directory again, reusing what is known of unchanged segments.
    ``same_writer``: LOCK says the writer session of the last look still holds the log."""
    catalog = state.catalog
    mode = state.config.recovery
    distrust = False
    for attempt in range(LOOKS):
        known = {s.path: s for s in catalog.sealed.states}
        if catalog.tail is not None:
            known[catalog.tail.path] = catalog.tail
        if distrust:
            # A rewind renames a rewritten copy over a segment, which may be sealed again
            # at the same size: what an earlier look checked may not be this file.
            known = {}
        try:
            found = plan(state.fs, state.path, known)
            if not distrust and known and found.meta.rewinds != state.rewinds:
                distrust = True
                found = plan(state.fs, state.path, {})
            damage = found.damage
            if damage is not None and (
                mode == "strict" or (mode == "tolerate_tail" and not damage.torn)
            ):
                raise damage.exception()
            break
        except StorageError as exc:
            # The writer deleted a segment between our listing and our reading it
            # (retention); META moved first, so a second look is consistent.
            if exc.errno != errno.ENOENT or attempt == LOOKS - 1:
                raise
        except CorruptionError:
            distrust = True  # look again as a first open would
            # A writer changing the log while we look (a rotation between our listing and
            # META, a rewind rewriting the tail) can make a healthy log look damaged for a
            # moment; damage that is really there is there at every look.
            if attempt == LOOKS - 1:
                raise
    segments = found.segments
    with state.lock:
        state.meta = found.meta
        state.remember_rewinds()
        tail = segments[-1] if segments and segments[-1].seal is None else None
        catalog.replace((s for s in segments if s.seal is not None), tail, same_writer=same_writer)
        last = segments[-1].last_lsn if segments else 0
        published = read_lock(state.fs, state.path)
        # A writer that is open, or was killed, vouches only for what it published; a
        # closed log, or one whose LOCK a machine crash left unreadable, is all on disk.
        if published is None or not published.pid:
            durable = last
        else:
            durable = min(last, published.durable_lsn)
        # The writer's own counters, as of its last publication (readonly stats()).
        state.writer_counters = published.counters if published is not None else None
    state.commit.reset(durable)
    return found
