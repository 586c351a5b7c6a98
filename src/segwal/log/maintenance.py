"""Dropping data safely: checkpoints (``truncate_before``), rewinds (``truncate_after``),
retention rules and holds.

Every deletion first makes the new first LSN durable in META, then removes whole sealed
segments oldest first and fsyncs the directory once: a crash at any point leaves a
contiguous log whose first LSN is at or below the persisted one (leftovers below it are
removed at the next open). A rewind records its intent in META first, so recovery can
finish it whatever instant the machine dies.
"""

from __future__ import annotations

from dataclasses import dataclass

from segwal.errors import ConfigError, HoldError, NotFoundError
from segwal.log.base import WalBase, log, segment_info, writer_info, writer_state
from segwal.log.cursors import HOLD_PREFIX, Cursor
from segwal.log.cursors import check_name as check_cursor_name
from segwal.log.cursors import load as load_cursor
from segwal.log.cursors import load_all as load_cursors
from segwal.log.cursors import remove as remove_cursor
from segwal.log.cursors import store as store_cursor
from segwal.log.retention import Decision, Rules, decide, lowest_hold
from segwal.log.telemetry import event_extra
from segwal.storage.index import remove as remove_index
from segwal.storage.meta import Meta, check_hold_name
from segwal.storage.meta import store as store_meta
from segwal.storage.segment import SegmentWriter, undo
from segwal.storage.tail import start_writer
from segwal.storage.truncation import rewrite_prefix


@dataclass(frozen=True, slots=True, kw_only=True)
class Deletion:
    """One segment that retention or a truncation deleted, and the rule that did it."""

    path: str
    first_lsn: int
    last_lsn: int
    size_bytes: int
    rule: str
    deferred: bool = False  # a live reader was on it: the file goes when the reader is done


@dataclass(frozen=True, slots=True, kw_only=True)
class TruncateResult:
    """What ``truncate_before`` or ``truncate_after`` did."""

    segments_deleted: int
    bytes_reclaimed: int
    first_lsn: int
    last_lsn: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionResult:
    """What ``apply_retention`` or ``prune_through`` deleted."""

    deleted: tuple[Deletion, ...]
    bytes_reclaimed: int
    first_lsn: int


def _lsn(value: object, name: str = "lsn") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, not {value!r}", option=name)
    return value


class Maintenance(WalBase):
    """Truncation, retention and holds of :class:`segwal.Wal`."""

    def _ensure_durable(self, lsn: int) -> None:
        """Overridden by Wal: make records up to ``lsn`` durable."""

    def _check_range(self, what: str, lsn: int, low: int, high: int) -> None:
        """Raise NotFoundError, saying what would work, unless ``low <= lsn <= high``."""
        if not low <= lsn <= high:
            first, last = self.first_lsn, self.last_lsn
            raise NotFoundError(
                f"cannot {what} LSN {lsn}: the log holds LSNs {first}..{last} (use {low}..{high})",
                lsn=lsn,
                first_lsn=first,
                last_lsn=last,
            )

    # -- rules ----------------------------------------------------------------------------

    def _configured_rules(self, **extra: int | None) -> Rules:
        config = self._config
        age = config.retention_max_age
        return Rules(
            max_age_us=None if age is None else int(age * 1e6),
            max_bytes=config.retention_max_bytes,
            min_segments=config.retention_min_segments,
            **extra,
        )

    def _decide(self, rules: Rules) -> list[Decision]:
        infos = [segment_info(s) for s in self._sealed]
        if self._writer is not None:
            infos.append(writer_info(self._writer))
        elif self._tail is not None:
            infos.append(segment_info(self._tail))
        return decide(infos, rules, now_us=self._config.clock(), holds=self._all_holds())

    def _all_holds(self) -> dict[str, int]:
        """Holds and consumer cursors: both keep records at or above their LSN."""
        found = dict(self._meta.holds)
        for name, position in load_cursors(self._fs, self._path).items():
            found[HOLD_PREFIX + name] = position
        return found

    def retention_plan(self) -> list[Decision]:
        """For each segment, whether the configured rules would delete it and what keeps it."""
        self._check_open()
        with self._lock:
            return self._decide(self._configured_rules())

    def apply_retention(self) -> RetentionResult:
        """Delete the sealed segments the configured rules let go (also done on rotation)."""
        with self._lock:
            self._check_writable()
            return self._delete_locked(self._decide(self._configured_rules()))

    def prune_through(self, timestamp_us: int) -> RetentionResult:
        """Delete sealed segments whose records are all at or before ``timestamp_us``."""
        ts = _lsn(timestamp_us, "timestamp_us")
        with self._lock:
            self._check_writable()
            rules = Rules(min_segments=self._config.retention_min_segments, prune_through_us=ts)
            return self._delete_locked(self._decide(rules))

    def _delete_locked(
        self, decisions: list[Decision], first_lsn: int | None = None
    ) -> RetentionResult:
        doomed = [d for d in decisions if d.delete]
        new_first = max(first_lsn or 0, doomed[-1].segment.last_lsn + 1 if doomed else 0)
        try:
            if new_first > self._meta.first_lsn:
                # The new first LSN is durable before any file goes.
                meta = self._meta.with_(first_lsn=new_first)
                self._store_meta(meta)
                self._io["fsyncs"] += 1
                self._io["dir_fsyncs"] += 1
            deleted = []
            for decision in doomed:
                info = decision.segment
                deferred = self._pins.get(info.path, 0) > 0
                if deferred:
                    self._doomed.add(info.path)
                else:
                    self._fs.unlink(info.path)
                    remove_index(self._fs, info.path)
                deleted.append(
                    Deletion(
                        path=info.path,
                        first_lsn=info.first_lsn,
                        last_lsn=info.last_lsn,
                        size_bytes=info.size_bytes,
                        rule=decision.rule or "",
                        deferred=deferred,
                    )
                )
                log.info(
                    "deleted segment %s (LSNs %d..%d) by rule %s%s",
                    info.path,
                    info.first_lsn,
                    info.last_lsn,
                    decision.rule,
                    " once its reader is done" if deferred else "",
                    extra=event_extra(
                        "retention_deletion",
                        self._path,
                        path=info.path,
                        first_lsn=info.first_lsn,
                        last_lsn=info.last_lsn,
                        size_bytes=info.size_bytes,
                        rule=decision.rule,
                        deferred=deferred,
                    ),
                )
            if doomed:
                self._fs.sync_dir(self._path, "retention.unlink")
                self._io["dir_fsyncs"] += 1
        except BaseException as exc:
            self._fail(exc)
            raise
        self._telemetry.deleted(len(deleted))
        gone = {d.path for d in deleted}
        self._sealed = [s for s in self._sealed if s.path not in gone]
        return RetentionResult(
            deleted=tuple(deleted),
            bytes_reclaimed=sum(d.size_bytes for d in deleted),
            first_lsn=self.first_lsn,
        )

    # -- truncation -----------------------------------------------------------------------

    def truncate_before(self, lsn: int) -> TruncateResult:
        """A checkpoint: records below ``lsn`` are never returned again, even after a crash.

        The new first LSN is made durable first; then whole sealed segments below it are
        deleted. ``lsn`` may be ``last_lsn + 1`` to drop every record.
        """
        lsn = _lsn(lsn)
        with self._lock:
            self._check_writable()
            first, last = self.first_lsn, self.last_lsn
            self._check_range("truncate before", lsn, first, last + 1)
            hold = lowest_hold(self._all_holds())
            if hold is not None and lsn > hold[1]:
                raise HoldError(hold[0], hold[1], lsn)
            if lsn == first:
                return TruncateResult(
                    segments_deleted=0, bytes_reclaimed=0, first_lsn=first, last_lsn=last
                )
            self._ensure_durable(lsn - 1)
            result = self._delete_locked(self._decide(Rules(before_lsn=lsn)), first_lsn=lsn)
            return TruncateResult(
                segments_deleted=len(result.deleted),
                bytes_reclaimed=result.bytes_reclaimed,
                first_lsn=self.first_lsn,
                last_lsn=self.last_lsn,
            )

    def truncate_after(self, lsn: int) -> TruncateResult:
        """Rewind the tail: records above ``lsn`` are dropped; the next append gets ``lsn + 1``.

        Crash-safe at every step: the intent is recorded in META, later segments are
        deleted, the segment holding ``lsn`` is rewritten aside and renamed into place, and
        the intent is cleared; recovery finishes an interrupted rewind.
        """
        lsn = _lsn(lsn)
        with self._lock:
            writer = self._check_writable()
            first, last = self.first_lsn, self.last_lsn
            self._check_range("truncate after", lsn, first - 1, last)
            if lsn == last:
                return TruncateResult(
                    segments_deleted=0, bytes_reclaimed=0, first_lsn=first, last_lsn=last
                )
            with self._commit.exclusive():
                try:
                    return self._rewind_locked(writer, lsn)
                except BaseException as exc:
                    self._fail(exc)
                    raise

    def _rewind_locked(self, writer: SegmentWriter, lsn: int) -> TruncateResult:
        fs, directory = self._fs, self._path
        self._rewinds += 1  # readers with an older snapshot must not open recreated files
        self._store_meta(self._meta.with_(truncate_after=lsn))
        writer.close()
        states = [*self._sealed, writer_state(writer)]
        later = [s for s in states if s.header.first_lsn > lsn]
        keep = [s for s in states if s.header.first_lsn <= lsn]
        reclaimed = 0
        for state in reversed(later):
            fs.unlink(state.path)
            remove_index(fs, state.path)
            reclaimed += state.size
        if later:
            fs.sync_dir(directory, "truncate.unlink")
        if keep and keep[-1].last_lsn > lsn:
            before = keep[-1].size
            keep[-1] = rewrite_prefix(fs, directory, keep[-1], lsn)
            reclaimed += before - keep[-1].size
        self._store_meta(self._meta.with_(truncate_after=None))
        self._sealed = [s for s in keep if s.seal is not None]
        self._writer, created = start_writer(
            fs,
            directory,
            keep,
            first_lsn=lsn + 1,
            now_us=self._config.clock(),
            max_record_bytes=self._config.max_record_bytes,
        )
        self._io["created"] += int(created)
        self._commit.reset(lsn)
        return TruncateResult(
            segments_deleted=len(later),
            bytes_reclaimed=reclaimed,
            first_lsn=self.first_lsn,
            last_lsn=self.last_lsn,
        )

    # -- holds ----------------------------------------------------------------------------

    def hold(self, name: str, lsn: int) -> None:
        """Keep every record at or above ``lsn`` until ``release(name)``; survives restarts."""
        name = check_hold_name(name)
        lsn = _lsn(lsn)
        with self._lock:
            self._check_writable()
            self._check_range("hold", lsn, self.first_lsn, self.last_lsn + 1)
            self._store_holds({**self._meta.holds, name: lsn})

    def release(self, name: str) -> bool:
        """Drop the hold ``name``; False when there was none."""
        name = check_hold_name(name)
        with self._lock:
            self._check_writable()
            if name not in self._meta.holds:
                return False
            holds = dict(self._meta.holds)
            del holds[name]
            self._store_holds(holds)
            return True

    def holds(self) -> dict[str, int]:
        """The holds in force: name -> lowest LSN it keeps."""
        self._check_open()
        return dict(self._meta.holds)

    # -- consumer cursors -----------------------------------------------------------------

    def cursor(self, name: str, *, start: int | None = None) -> Cursor:
        """The consumer cursor ``name``, created at ``start`` (default: the first LSN).

        Its position persists in its own file and holds its records against retention, so
        a consumer restarts where it left off. Works on readonly opens too: committing a
        cursor writes only the cursor's file, never the log's.
        """
        name = check_cursor_name(name)
        self._check_open()
        position = load_cursor(self._fs, self._path, name)
        if position is None:
            position = self.first_lsn if start is None else _lsn(start, "start")
            self._commit_cursor(name, position)
        return Cursor(self, name, position)  # type: ignore[arg-type]

    def cursors(self) -> dict[str, int]:
        """Every consumer cursor: name -> the next LSN it will read."""
        self._check_open()
        return load_cursors(self._fs, self._path)

    def _commit_cursor(self, name: str, position: int) -> None:
        self._check_open()
        self._check_range("put a cursor at", position, self.first_lsn, self.last_lsn + 1)
        store_cursor(self._fs, self._path, name, position)

    def _delete_cursor(self, name: str) -> bool:
        self._check_open()
        return remove_cursor(self._fs, self._path, name)

    def _store_holds(self, holds: dict[str, int]) -> None:
        try:
            self._store_meta(self._meta.with_(holds=holds))
        except BaseException as exc:
            self._fail(exc)
            raise

    def _store_meta(self, meta: Meta) -> None:
        """Replace META; if that fails, put the old one back (best effort) so a restart in
        this boot does not trust a name the disk may not have."""
        old = self._meta
        try:
            store_meta(self._fs, self._path, meta)
        except BaseException:
            undo(lambda: store_meta(self._fs, self._path, old))
            raise
        self._meta = meta
