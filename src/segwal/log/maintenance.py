"""Dropping data safely: checkpoints (``truncate_before``), rewinds (``truncate_after``),
retention rules, holds and consumer cursors.

Every deletion first makes the new first LSN durable in META, then removes whole sealed
segments oldest first and fsyncs the directory once: a crash at any point leaves a
contiguous log whose first LSN is at or below the persisted one (leftovers below it are
removed at the next open). A rewind records its intent in META first, so recovery can
finish it whatever instant the machine dies. What keeps records (the checkpoint, holds,
cursors, live readers) is known here only: ``holds()`` lists cursors too, and truncations
are planned by ``plans.plan_truncate`` for the dry run and the real run alike.
"""

from __future__ import annotations

from segwal.errors import ConfigError, CorruptionError, ReaderFellBehindError, StorageError
from segwal.events import Rewound, SegmentDeleted
from segwal.format.meta import Meta, check_hold_name
from segwal.log import arguments
from segwal.log.appender import Appender
from segwal.log.catalog import segment_info, writer_state
from segwal.log.cursors import Cursor
from segwal.log.cursors import check_name as check_cursor_name
from segwal.log.cursors import load as load_cursor
from segwal.log.cursors import load_all as load_cursors
from segwal.log.cursors import remove as remove_cursor
from segwal.log.cursors import store as store_cursor
from segwal.log.plans import (
    CURSOR_HOLD_PREFIX,
    Deletion,
    RetentionResult,
    TruncatePlan,
    TruncateResult,
    check_range,
    plan_truncate,
)
from segwal.log.retention import Decision, Rules, decide
from segwal.log.state import LogState, log
from segwal.log.telemetry import event_extra
from segwal.storage.index import remove as remove_index
from segwal.storage.meta import store as store_meta
from segwal.storage.segment import SegmentWriter, undo
from segwal.storage.tail import start_writer
from segwal.storage.truncation import rewrite_prefix


class Maintenance:
    """Truncation, retention, holds and cursors of one open log."""

    def __init__(self, state: LogState, appender: Appender | None) -> None:
        self._state = state
        self._appender = appender  # None on a readonly log, which only plans

    def _writable(self) -> tuple[Appender, SegmentWriter]:
        """The appender, once the log is known writable and its buffer is written."""
        appender = self._appender
        if appender is None:
            self._state.check_writable()  # raises ClosedError or ReadOnlyError
            raise AssertionError("unreachable")
        return appender, appender.settle()

    def _range(self, what: str, lsn: int, low: int, high: int) -> None:
        state = self._state
        check_range(what, lsn, low, high, state.first_lsn, state.last_lsn)

    # -- rules ----------------------------------------------------------------------------

    def configured_rules(self) -> Rules:
        config = self._state.config
        age = config.retention_max_age
        return Rules(
            max_age_us=None if age is None else int(age * 1e6),
            max_bytes=config.retention_max_bytes,
            min_segments=config.retention_min_segments,
        )

    def retention_configured(self) -> bool:
        config = self._state.config
        return config.retention_max_age is not None or config.retention_max_bytes is not None

    def _decide(self, rules: Rules) -> list[Decision]:
        state = self._state
        return decide(
            self._state.segment_infos(), rules, now_us=state.config.now_us(), holds=self.holds()
        )

    def retention_plan(self) -> list[Decision]:
        state = self._state
        state.check_open()
        with state.lock:
            return self._decide(self.configured_rules())

    def apply_retention(self) -> RetentionResult:
        with self._state.lock:
            self._writable()
            return self.delete_locked(self._decide(self.configured_rules()))

    def retain_after_seal(self) -> None:
        """The retention a rotation applies once it sealed a segment (lock held).

        An append never fails because of a consumer's file: when a cursor cannot be read,
        nothing is deleted now (its position may hold records) and a warning says why.
        """
        if not self.retention_configured():
            return
        try:
            decisions = self._decide(self.configured_rules())
        except (CorruptionError, StorageError) as exc:
            log.warning(
                "retention skipped on rotation: %s",
                exc,
                extra=event_extra("retention_skipped", self._state.path, reason=str(exc)),
            )
            return
        self.delete_locked(decisions)

    def prune_through(self, timestamp_us: int) -> RetentionResult:
        ts = arguments.lsn(timestamp_us, "timestamp_us")
        state = self._state
        with state.lock:
            self._writable()
            rules = Rules(min_segments=state.config.retention_min_segments, prune_through_us=ts)
            return self.delete_locked(self._decide(rules))

    def delete_locked(
        self, decisions: list[Decision], first_lsn: int | None = None
    ) -> RetentionResult:
        state = self._state
        doomed = [d for d in decisions if d.delete]
        new_first = max(first_lsn or 0, doomed[-1].segment.last_lsn + 1 if doomed else 0)
        try:
            if new_first > state.meta.first_lsn:
                # The new first LSN is durable before any file goes.
                self._store_meta(state.meta.with_(first_lsn=new_first))
                state.io["fsyncs"] += 1
                state.io["dir_fsyncs"] += 1
            deleted = []
            for decision in doomed:
                info = decision.segment
                deferred = state.catalog.retire(info.path)
                deletion = Deletion(
                    path=info.path,
                    first_lsn=info.first_lsn,
                    last_lsn=info.last_lsn,
                    size_bytes=info.size_bytes,
                    rule=decision.rule or "",
                    deferred=deferred,
                )
                deleted.append(deletion)
                log.info(
                    "deleted segment %s (LSNs %d..%d) by rule %s%s",
                    info.path,
                    info.first_lsn,
                    info.last_lsn,
                    decision.rule,
                    " once its reader is done" if deferred else "",
                    extra=event_extra(
                        "retention_deletion",
                        state.path,
                        path=info.path,
                        first_lsn=info.first_lsn,
                        last_lsn=info.last_lsn,
                        size_bytes=info.size_bytes,
                        rule=decision.rule,
                        deferred=deferred,
                    ),
                )
                state.emit(_deleted(deletion))
            if doomed:
                state.fs.sync_dir(state.path, "retention.unlink")
                state.io["dir_fsyncs"] += 1
        except BaseException as exc:
            state.fail(exc)
            raise
        state.telemetry.deleted(len(deleted))
        state.catalog.drop({d.path for d in deleted})
        return RetentionResult(
            deleted=tuple(deleted),
            bytes_reclaimed=sum(d.size_bytes for d in deleted),
            first_lsn=state.first_lsn,
        )

    # -- truncation -----------------------------------------------------------------------

    def truncate_plan(self, *, before: int | None = None, after: int | None = None) -> TruncatePlan:
        """What ``truncate_before(before)`` or ``truncate_after(after)`` would do now."""
        state = self._state
        state.check_open()
        with state.lock:
            return self._plan(before=before, after=after)

    def _plan(self, *, before: int | None = None, after: int | None = None) -> TruncatePlan:
        state = self._state
        return plan_truncate(
            self._state.segment_infos(),
            first=state.first_lsn,
            last=state.last_lsn,
            holds=self.holds(),
            before=before,
            after=after,
        )

    def truncate_before(self, lsn: int) -> TruncateResult:
        lsn = arguments.lsn(lsn)
        state = self._state
        with state.lock:
            appender, _writer = self._writable()
            plan = self._plan(before=lsn)
            if not plan.changes:
                return _result(plan, 0, 0)
            appender.ensure_durable(lsn - 1)
            doomed = {s.path for s in plan.deleted}
            decisions = [
                Decision(segment=a.segment, delete=True, rule="truncate_before")
                if a.segment.path in doomed
                else Decision(segment=a.segment, delete=False)
                for a in plan.segments
            ]
            result = self.delete_locked(decisions, first_lsn=lsn)
            return TruncateResult(
                segments_deleted=len(result.deleted),
                bytes_reclaimed=result.bytes_reclaimed,
                first_lsn=state.first_lsn,
                last_lsn=state.last_lsn,
            )

    def truncate_after(self, lsn: int) -> TruncateResult:
        lsn = arguments.lsn(lsn)
        state = self._state
        with state.lock:
            _appender, writer = self._writable()
            plan = self._plan(after=lsn)
            if not plan.changes:
                return _result(plan, 0, 0)
            self._check_rewind(writer, lsn)
            with state.commit.exclusive():
                try:
                    return self._rewind_locked(writer, lsn)
                except BaseException as exc:
                    state.fail(exc)
                    raise

    def _check_rewind(self, writer: SegmentWriter, lsn: int) -> None:
        """A cut inside a compressed or encrypted batch re-encodes it: raise the missing
        codec or key now, before the rewind's intent is stored or anything changes."""
        for part in (*self._state.catalog.sealed.states, writer_state(writer)):
            if part.header.first_lsn <= lsn < part.last_lsn:
                self._state.coding.check_rewrite(part.header, part.path)

    def _rewind_locked(self, writer: SegmentWriter, lsn: int) -> TruncateResult:
        state = self._state
        fs, directory = state.fs, state.path
        # Counted in META with the intent: readers, cursors and caches in any process can
        # tell "the same LSNs, other bytes" apart, across restarts too.
        self._store_meta(state.meta.rewound(lsn).with_(truncate_after=lsn))
        state.rewound(lsn)
        writer.close()
        states = [*state.catalog.sealed.states, writer_state(writer)]
        later = [s for s in states if s.header.first_lsn > lsn]
        keep = [s for s in states if s.header.first_lsn <= lsn]
        reclaimed = 0
        for gone in reversed(later):
            fs.unlink(gone.path)
            remove_index(fs, gone.path)
            reclaimed += gone.size
        if later:
            fs.sync_dir(directory, "truncate.unlink")
        if keep and keep[-1].last_lsn > lsn:
            before = keep[-1].size
            keep[-1] = rewrite_prefix(fs, directory, keep[-1], lsn, state.coding)
            reclaimed += before - keep[-1].size
        self._store_meta(state.meta.with_(truncate_after=None))
        state.writer, created = start_writer(
            fs,
            directory,
            keep,
            first_lsn=lsn + 1,
            now_us=state.config.now_us(),
            max_record_bytes=state.config.max_record_bytes,
            coding=state.coding,
            log_id=writer.header.log_id,  # a log cut to nothing keeps its id (and its KEYS)
        )
        # After start_writer: it may have sealed an unencrypted tail of a log given keys.
        state.catalog.replace(s for s in keep if s.seal is not None and s.path != state.writer.path)
        state.io["created"] += int(created)
        state.commit.reset(lsn)
        if self._appender is not None:
            self._appender.republish(lsn)
        for gone in later:
            info = segment_info(gone)
            deletion = Deletion(
                path=info.path,
                first_lsn=info.first_lsn,
                last_lsn=info.last_lsn,
                size_bytes=info.size_bytes,
                rule="truncate_after",
            )
            state.emit(_deleted(deletion))
        state.emit(Rewound(lsn=lsn, rewinds=state.rewinds))
        return TruncateResult(
            segments_deleted=len(later),
            bytes_reclaimed=reclaimed,
            first_lsn=state.first_lsn,
            last_lsn=state.last_lsn,
        )

    # -- holds ----------------------------------------------------------------------------

    def hold(self, name: str, lsn: int) -> None:
        name = check_hold_name(name)
        if name.startswith(CURSOR_HOLD_PREFIX):
            raise ConfigError(
                f"invalid hold name {name!r}: names starting with {CURSOR_HOLD_PREFIX!r} are "
                "the holds of consumer cursors (use wal.cursor(name))",
                option="name",
            )
        lsn = arguments.lsn(lsn)
        state = self._state
        with state.lock:
            self._writable()
            self._range("hold", lsn, state.first_lsn, state.last_lsn + 1)
            self._store_holds({**state.meta.holds, name: lsn})

    def release(self, name: str) -> bool:
        name = check_hold_name(name)
        state = self._state
        if name.startswith(CURSOR_HOLD_PREFIX):
            # A cursor's hold is its position: releasing it forgets the consumer.
            cursor = check_cursor_name(name[len(CURSOR_HOLD_PREFIX) :])
            with state.lock:
                self._writable()
                return remove_cursor(state.fs, state.path, cursor)
        with state.lock:
            self._writable()
            if name not in state.meta.holds:
                return False
            holds = dict(state.meta.holds)
            del holds[name]
            self._store_holds(holds)
            return True

    def holds(self) -> dict[str, int]:
        """Holds and consumer cursors (as ``cursor:NAME``): both keep records at or above
        their LSN."""
        state = self._state
        state.check_open()
        found = dict(state.meta.holds)
        for name, position in load_cursors(state.fs, state.path).items():
            found[CURSOR_HOLD_PREFIX + name] = position
        return found

    # -- consumer cursors -----------------------------------------------------------------

    def cursor(self, host: object, name: str, *, start: int | None = None) -> Cursor:
        name = check_cursor_name(name)
        state = self._state
        state.check_open()
        stored = load_cursor(state.fs, state.path, name)
        if stored is None:
            position = state.first_lsn if start is None else arguments.lsn(start, "start")
            rewinds = self.commit_cursor(name, position)
        else:
            # A version 1 file was written before the log's first rewind.
            position, rewinds = stored.position, stored.rewinds or 0
        return Cursor(host, name, position, rewinds)  # type: ignore[arg-type]

    def cursors(self) -> dict[str, int]:
        state = self._state
        state.check_open()
        return load_cursors(state.fs, state.path)

    def commit_cursor(self, name: str, position: int) -> int:
        """Store the cursor's position; returns the rewind count it was stored with."""
        state = self._state
        state.check_open()
        self._range("put a cursor at", position, state.first_lsn, state.last_lsn + 1)
        rewinds = state.rewinds
        store_cursor(state.fs, state.path, name, position, rewinds)
        return rewinds

    def check_cursor(self, name: str, position: int, rewinds: int) -> None:
        """Raise ReaderFellBehindError when a rewind since the cursor's commit replaced
        records below its position (the consumer processed records that are gone)."""
        state = self._state
        if rewinds == state.rewinds:
            return
        lowest = state.rewound_below(rewinds, position - 1)
        if lowest is not None:
            raise ReaderFellBehindError(
                f"cursor {name!r} is at LSN {position}, but the log was rewound to LSN "
                f"{lowest} (truncate_after) after that position was committed: LSNs "
                f"{lowest + 1}..{position - 1} now hold other records; commit the cursor at "
                f"LSN {lowest} (cursor.commit({lowest})) to read them",
                lsn=lowest + 1,
                first_lsn=state.first_lsn,
            )

    def delete_cursor(self, name: str) -> bool:
        state = self._state
        state.check_open()
        return remove_cursor(state.fs, state.path, name)

    def _store_holds(self, holds: dict[str, int]) -> None:
        try:
            self._store_meta(self._state.meta.with_(holds=holds))
        except BaseException as exc:
            self._state.fail(exc)
            raise

    def _store_meta(self, meta: Meta) -> None:
        """Replace META; if that fails, put the old one back (best effort) so a restart in
        this boot does not trust a name the disk may not have."""
        state = self._state
        old = state.meta
        try:
            store_meta(state.fs, state.path, meta)
        except BaseException:
            undo(lambda: store_meta(state.fs, state.path, old))
            raise
        state.meta = meta
        state.io["meta_stores"] += 1
        if self._appender is not None:
            self._appender.announce()  # readonly views elsewhere: look again


def _result(plan: TruncatePlan, deleted: int, reclaimed: int) -> TruncateResult:
    return TruncateResult(
        segments_deleted=deleted,
        bytes_reclaimed=reclaimed,
        first_lsn=plan.first_lsn,
        last_lsn=plan.last_lsn,
    )


def _deleted(deletion: Deletion) -> SegmentDeleted:
    return SegmentDeleted(
        path=deletion.path,
        first_lsn=deletion.first_lsn,
        last_lsn=deletion.last_lsn,
        size_bytes=deletion.size_bytes,
        rule=deletion.rule,
        deferred=deletion.deferred,
    )
