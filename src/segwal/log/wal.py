"""The log: open and close, append, LSNs, rotation, the durable LSN, reads and replay.

``Wal`` is thread-safe. Appends take one lock while they assign LSNs and write; durability
is shared among concurrent appenders by :class:`~segwal.log.commit.GroupCommit`. After any failed
write or barrier the log fails closed: every later mutation raises ``WalFailedError``.
"""

from __future__ import annotations

import errno
import posixpath
import threading
from collections.abc import Callable, Iterable, Sequence
from time import perf_counter
from typing import Any

from segwal.errors import (
    ConfigError,
    ContinuityError,
    InvalidPayloadError,
    NotFoundError,
    RecordTooLargeError,
    StorageError,
)
from segwal.format.layout import FRAME_HEAD_SIZE, MAX_LSN, SEAL_SIZE, encode_frames, encode_record
from segwal.log.base import log, segment_info
from segwal.log.commit import GroupCommit
from segwal.log.config import WalConfig
from segwal.log.maintenance import Maintenance
from segwal.log.reading import Reading
from segwal.log.telemetry import event_extra
from segwal.storage.index import save as save_index
from segwal.storage.lockfile import publish_durable, read_lock, take_lock
from segwal.storage.meta import store as store_meta
from segwal.storage.recovery import Plan, SegmentState, plan
from segwal.storage.repair import carry_out
from segwal.storage.segment import SegmentWriter
from segwal.storage.tail import start_writer
from segwal.types import Cut, RecoveryReport, SegmentInfo

_MAX_TYPE = 0xFFFF


def _payload(data: Any, index: int | None = None) -> bytes:
    if type(data) is bytes:
        return data
    if isinstance(data, str | int | float) or data is None:
        raise InvalidPayloadError(
            f"payload must be bytes-like, not {type(data).__name__}", index=index
        )
    try:
        return memoryview(data).tobytes()
    except TypeError:
        raise InvalidPayloadError(
            f"payload must be bytes-like, not {type(data).__name__}", index=index
        ) from None


def _exhausted() -> ConfigError:
    return ConfigError(f"the log has used every LSN up to {MAX_LSN}", option="lsn")


def _check_type(record_type: Any) -> int:
    if isinstance(record_type, bool) or not isinstance(record_type, int):
        raise ConfigError(f"type must be an integer, not {record_type!r}", option="type")
    if not 0 <= record_type <= _MAX_TYPE:
        raise ConfigError(
            f"type must be between 0 and {_MAX_TYPE}, not {record_type}", option="type"
        )
    return record_type


class Wal(Reading, Maintenance):
    """A segmented write-ahead log in one directory. Use :func:`segwal.open` to get one."""

    def __init__(self, path: str, config: WalConfig) -> None:
        super().__init__(path, config)
        self._published = 0
        self._buffer_limit = config.buffer_bytes
        self._max_record_bytes = config.max_record_bytes
        self._publish_lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()
        self._commit = GroupCommit(
            durable_lsn=0,
            barrier=self._barrier,
            on_durable=self._publish,
            on_failure=self._barrier_failed,
        )
        if config.readonly:
            self._report = self._open_readonly()
        else:
            self._report = self._open_writer()

    # -- opening -------------------------------------------------------------------------

    def _open_writer(self) -> RecoveryReport:
        fs, config = self._fs, self._config
        created = fs.make_dir(self._path)
        if not created:
            # A killed writer may have made the directory without its parent's fsync.
            fs.sync_dir(posixpath.dirname(posixpath.abspath(self._path)), "make_dir")
        self._lock_handle = take_lock(fs, self._path)
        try:
            found = plan(fs, self._path)
            damage = found.damage
            mode = config.recovery
            if damage is not None and (
                mode == "strict" or (mode == "tolerate_tail" and not damage.torn)
            ):
                raise damage.exception()
            repair = carry_out(fs, found, mode)
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
                store_meta(fs, self._path, found.meta)
            writer, new_segment = start_writer(
                fs,
                self._path,
                found.segments,
                first_lsn=first_lsn,
                now_us=config.clock(),
                max_record_bytes=config.max_record_bytes,
            )
        except BaseException:
            self._lock_handle.close()
            raise
        self._meta = found.meta
        self._sealed = [s for s in found.segments if s.seal is not None and s.path != writer.path]
        self._writer = writer
        self._io["created"] += int(new_segment)
        self._last_ts = max((s.max_ts for s in found.segments), default=0)
        last = writer.last_lsn
        self._commit.reset(last)
        self._publish(last)
        report = RecoveryReport(
            mode=mode,
            created=created or not found.segments,
            segments=len(self._sealed) + 1,
            first_lsn=self.first_lsn,
            last_lsn=last,
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
                    self._path,
                    path=cut.path,
                    offset=cut.offset,
                    length=cut.length,
                    lsn=cut.lsn,
                    reason=cut.reason,
                ),
            )
        for path in repair.quarantined:
            log.warning(
                "recovery moved %s aside",
                path,
                extra=event_extra("recovery_quarantine", self._path, path=path),
            )
        if config.sync == "interval":
            self._flusher = threading.Thread(
                target=self._flush_loop, name="segwal-flusher", daemon=True
            )
            self._flusher.start()
        return report

    def _open_readonly(self) -> RecoveryReport:
        found = self._load_view()
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
            mode=self._config.recovery,
            segments=len(found.segments),
            first_lsn=self.first_lsn,
            last_lsn=self.last_lsn,
            cuts=cuts,
            foreign_files=tuple(found.foreign),
        )

    def _load_view(self) -> Plan:
        """Readonly: look at the directory again without changing it."""
        for attempt in range(5):
            known = {s.path: s for s in self._sealed}
            if self._tail is not None:
                known[self._tail.path] = self._tail
            try:
                found = plan(self._fs, self._path, known)
                break
            except StorageError as exc:
                # The writer deleted a segment between our listing and our reading it
                # (retention); META moved first, so a second look is consistent.
                if exc.errno != errno.ENOENT or attempt == 4:
                    raise
        damage = found.damage
        mode = self._config.recovery
        if damage is not None and (
            mode == "strict" or (mode == "tolerate_tail" and not damage.torn)
        ):
            raise damage.exception()
        segments = found.segments
        with self._lock:
            self._meta = found.meta
            self._sealed = [s for s in segments if s.seal is not None]
            self._tail = segments[-1] if segments and segments[-1].seal is None else None
            last = segments[-1].last_lsn if segments else 0
            pid, published = read_lock(self._fs, self._path)
            # A writer that is open, or was killed, vouches only for what it published; a
            # closed log, or one whose LOCK a machine crash left unreadable, is all on disk.
            durable = last if not pid or published is None else min(last, published)
        self._commit.reset(durable)
        return found

    def refresh(self) -> None:
        """Readonly: pick up what the writer has made durable since the last look."""
        self._check_open()
        if self._config.readonly:
            self._load_view()

    def _refresh_view(self) -> None:
        self._load_view()

    # -- appending ------------------------------------------------------------------------

    def append(self, payload: bytes | bytearray | memoryview, type: int = 0) -> int:
        """Append one record; return its LSN. With sync="always" it is durable on return."""
        # bytes, never a mutable buffer: a buffered payload must not change under us.
        data = payload if payload.__class__ is bytes else _payload(payload)
        if type.__class__ is not int or not 0 <= type <= _MAX_TYPE:
            _check_type(type)
        size = len(data)
        if size > self._max_record_bytes:
            raise RecordTooLargeError(size, self._max_record_bytes)
        if self._buffer_limit:
            with self._lock:
                pending = self._pending
                # The hot path: a burst of one type on a healthy log (pending records mean
                # open and writable: close and a failed write leave none).
                if pending and type == self._pending_type and self._failure is None:
                    lsn = self._pending_last + 1
                    if lsn > MAX_LSN:
                        raise _exhausted()
                    pending.append(data)
                    self._pending_last = lsn
                    self._pending_bytes += size
                    if self._pending_bytes >= self._buffer_limit:
                        self._flush_pending()
                    return lsn
                return self._append_first_buffered(data, type, size)
        with self._lock:
            writer = self._check_writable()
            lsn = writer.last_lsn + 1
            if lsn > MAX_LSN:
                raise _exhausted()
            ts = self._stamp()
            frame_len = FRAME_HEAD_SIZE + 4 + size
            if self._rotation_due(writer, frame_len, size, ts):
                writer = self._rotate_for_append(writer, frame_len, size, ts)
            frame = encode_record(writer.header.seed, lsn, type, ts, self._commit.durable_lsn, data)
            self._write(writer, frame, lsn, ts)
            counters = self._counters
            counters["appends"] += 1
            counters["records"] += 1
            counters["payload_bytes"] += size
        if self._config.sync == "always":
            self._commit.wait_durable(lsn, lead=True)
        return lsn

    def _append_first_buffered(self, data: bytes, record_type: int, size: int) -> int:
        """Start a burst of buffered appends (the caller holds the lock)."""
        # _check_writable raises what is wrong, and writes a burst of another type first:
        # a frame holds records of one type.
        writer = self._check_writable()
        lsn = writer.last_lsn + 1
        if lsn > MAX_LSN:
            raise _exhausted()
        self._pending = [data]
        self._pending_first = self._pending_last = lsn
        self._pending_type = record_type
        self._pending_ts = self._stamp()  # the burst's records share its first stamp
        self._pending_bytes = size
        if size >= self._buffer_limit:
            self._flush_pending()
        return lsn

    def _flush_pending(self) -> None:
        """Write the buffered appends as one batch (all or nothing after a crash)."""
        with self._lock:
            items = self._pending
            if not items:
                return
            # Taken out first: a rotation inside the write must not flush them again.
            self._pending = []
            size, self._pending_bytes = self._pending_bytes, 0
            try:
                writer = self._check_writable()  # a barrier may have failed meanwhile
                first, record_type, ts = self._pending_first, self._pending_type, self._pending_ts
                lengths = list(map(len, items))
                data = self._encode_batch(writer, first, record_type, ts, items, lengths)
                self._write_batch(writer, data, first, record_type, ts, items, lengths)
            finally:
                # A failed write fails the log; the records it lost were never durable.
                self._pending_last = 0
            counters = self._counters
            counters["appends"] += len(items)
            counters["records"] += len(items)
            counters["payload_bytes"] += size

    def append_batch(
        self, payloads: Iterable[bytes | bytearray | memoryview], type: int = 0
    ) -> range:
        """Append records atomically: after a crash all of them are there, or none."""
        items: list[Any] = payloads if isinstance(payloads, list) else list(payloads)
        if type.__class__ is not int or not 0 <= type <= _MAX_TYPE:
            _check_type(type)
        # Fast path: no per-record type check. The encoder refuses payloads that are not
        # bytes-like or whose len() is not their size, and then they are converted one by one.
        try:
            lengths = list(map(len, items))
        except TypeError:
            items = [_payload(p, i) for i, p in enumerate(items)]
            lengths = list(map(len, items))
        self._check_sizes(lengths)  # before anything is encoded
        with self._lock:
            writer = self._check_writable()
            first = writer.last_lsn + 1
            if not items:
                return range(first, first)
            last = first + len(items) - 1
            if last > MAX_LSN:
                raise _exhausted()
            ts = self._stamp()
            try:
                data = self._encode_batch(writer, first, type, ts, items, lengths)
            except (TypeError, ValueError):
                items = [_payload(p, i) for i, p in enumerate(items)]
                lengths = list(map(len, items))
                self._check_sizes(lengths)
                data = self._encode_batch(writer, first, type, ts, items, lengths)
            self._write_batch(writer, data, first, type, ts, items, lengths)
            counters = self._counters
            counters["appends"] += 1
            counters["records"] += len(items)
            counters["payload_bytes"] += sum(lengths)
        if self._config.sync == "always":
            self._commit.wait_durable(last, lead=True)
        return range(first, last + 1)

    def _write_batch(
        self,
        writer: SegmentWriter,
        data: bytes | bytearray,
        first: int,
        record_type: int,
        ts: int,
        items: list[bytes],
        lengths: list[int],
    ) -> None:
        """Write the batch ``data`` (``items`` encoded from LSN ``first``), rotating first
        and encoding again when it does not fit the active segment."""
        largest = max(lengths)
        if self._rotation_due(writer, len(data), largest, ts):
            writer = self._rotate_for_append(writer, len(data), largest, ts)
            data = self._encode_batch(writer, first, record_type, ts, items, lengths)
        self._write(writer, data, first + len(items) - 1, ts)

    def _check_sizes(self, lengths: list[int]) -> None:
        limit = self._config.max_record_bytes
        largest = max(lengths, default=0)
        if largest > limit:
            raise RecordTooLargeError(largest, limit, index=lengths.index(largest))

    def _encode_batch(
        self,
        writer: SegmentWriter,
        first: int,
        record_type: int,
        ts: int,
        items: list[bytes],
        lengths: list[int],
    ) -> bytearray:
        return encode_frames(
            seed=writer.header.seed,
            first_lsn=first,
            record_type=record_type,
            timestamp_us=ts,
            durable_lsn=self._commit.durable_lsn,
            payloads=items,
            lengths=lengths,
        )

    def _stamp(self) -> int:
        # Timestamps never decrease within a log, even when the clock steps back.
        now = self._config.clock()
        now = max(now, self._last_ts)
        self._last_ts = now
        return now

    def _write(self, writer: SegmentWriter, data: bytes | bytearray, last: int, ts: int) -> None:
        try:
            writer.write(data, last, ts)
        except BaseException as exc:
            self._fail(exc)
            writer.discard_unsynced()
            raise
        self._io["written_bytes"] += len(data)
        self._io["writes"] += 1
        self._commit.wrote(last)

    def _rotation_due(self, writer: SegmentWriter, frame_len: int, largest: int, ts: int) -> bool:
        if largest > writer.header.max_record_bytes:
            return True
        if writer.count == 0:
            return False
        if writer.offset + frame_len + SEAL_SIZE > self._config.segment_bytes:
            return True
        return self._aged(writer, ts)

    def _aged(self, writer: SegmentWriter, now_us: int) -> bool:
        age = self._config.max_segment_age
        return age is not None and writer.count > 0 and now_us - writer.min_ts >= age * 1e6

    def _rotate_for_append(
        self, writer: SegmentWriter, frame_len: int, largest: int, ts: int
    ) -> SegmentWriter:
        if largest > writer.header.max_record_bytes:
            reason = "limit"
        elif writer.offset + frame_len + SEAL_SIZE > self._config.segment_bytes:
            reason = "size"
        else:
            reason = "age"
        self._rotate_locked(reason)
        assert self._writer is not None
        return self._writer

    # -- rotation -------------------------------------------------------------------------

    def rotate(self) -> SegmentInfo | None:
        """Seal the active segment and start the next; None when it holds no record."""
        with self._lock:
            self._check_writable()
            return self._rotate_locked("forced")

    def _rotate_locked(self, reason: str) -> SegmentInfo | None:
        writer = self._writer
        assert writer is not None
        config = self._config
        if writer.count == 0 and reason != "limit":
            return None
        with self._commit.exclusive():
            try:
                if writer.count == 0:
                    # An empty segment whose header limit is too small is replaced in place.
                    sealed = None
                    sequence, prev = writer.header.sequence, writer.header.prev_digest
                else:
                    seal = writer.seal(config.clock())
                    self._io["fsyncs"] += 1
                    self._io["written_bytes"] += SEAL_SIZE
                    sealed = SegmentState(
                        path=writer.path,
                        header=writer.header,
                        size=writer.offset,
                        end=seal.data_end,
                        last_lsn=seal.last_lsn,
                        min_ts=seal.min_ts,
                        max_ts=seal.max_ts,
                        seal=seal,
                        index=writer.index,
                    )
                    sequence, prev = writer.header.sequence + 1, seal.digest
                writer.close()
                if sealed is not None:
                    self._sealed.append(sealed)
                    self._commit.publish(sealed.last_lsn)
                self._writer = SegmentWriter.create(
                    self._fs,
                    self._path,
                    log_id=writer.header.log_id,
                    sequence=sequence,
                    first_lsn=writer.last_lsn + 1,
                    created_us=config.clock(),
                    max_record_bytes=config.max_record_bytes,
                    prev_digest=prev,
                )
            except BaseException as exc:
                self._fail(exc)
                writer.discard_unsynced()
                raise
        self._io["fsyncs"] += 1
        self._io["dir_fsyncs"] += 1
        self._io["created"] += 1
        self._rotations[reason] = self._rotations.get(reason, 0) + 1
        if sealed is not None:
            self._telemetry.rotated(reason, sealed.path, sealed.header.first_lsn, sealed.last_lsn)
        if sealed is not None and sealed.seal is not None and sealed.index is not None:
            save_index(self._fs, sealed.path, sealed.index, sealed.seal.digest)
        if sealed is not None and self._retention_configured():
            self._delete_locked(self._decide(self._configured_rules()))
        return segment_info(sealed) if sealed is not None else None

    def _retention_configured(self) -> bool:
        config = self._config
        return config.retention_max_age is not None or config.retention_max_bytes is not None

    def _ensure_durable(self, lsn: int) -> None:
        if self._commit.durable_lsn < lsn:
            self._commit.wait_durable(lsn, lead=True)

    # -- durability -----------------------------------------------------------------------

    def _barrier_failed(self, exc: BaseException) -> None:
        self._fail(exc)
        with self._lock:
            if self._writer is not None:
                self._writer.discard_unsynced()

    def _barrier(self) -> None:
        writer = self._writer
        assert writer is not None
        started = perf_counter()
        writer.sync()
        self._io["fsyncs"] += 1
        self._telemetry.fsynced(perf_counter() - started)

    def _publish(self, lsn: int) -> None:
        handle = self._lock_handle
        if handle is None:
            return
        with self._publish_lock:
            if lsn <= self._published:
                return
            self._published = lsn
            try:
                publish_durable(handle, lsn)
            except OSError as exc:
                log.warning("could not publish durable LSN %d to readers: %s", lsn, exc)
        self._telemetry.durable(lsn)  # outside the lock: observers may take their own

    def sync(self) -> int:
        """Make every record appended so far durable; return the durable LSN."""
        self._check_writable()
        self._commit.wait_durable(self._commit.written_lsn, lead=True)
        return self._commit.durable_lsn

    def wait_durable(self, lsn: int, timeout: float | None = None) -> bool:
        """Wait until ``lsn`` is durable; False if ``timeout`` seconds passed first.

        With sync="interval" this waits for the background flusher; in the other modes the
        caller runs (or joins) a barrier itself.
        """
        self._check_open()
        if lsn > self.last_lsn:
            raise NotFoundError(
                f"LSN {lsn} has not been appended (last LSN is {self.last_lsn})",
                lsn=lsn,
                first_lsn=self.first_lsn,
                last_lsn=self.last_lsn,
            )
        if self._writer is None:
            return self._commit.durable_lsn >= lsn
        if lsn > self._commit.written_lsn and self._pending:
            self._flush_pending()  # the buffered appends it waits for
        lead = self._config.sync != "interval"
        return self._commit.wait_durable(lsn, lead=lead, timeout=timeout)

    def _flush_loop(self) -> None:
        interval = self._config.sync_interval
        while not self._stop.wait(interval):
            try:
                if self._pending:
                    with self._lock:
                        if not self._closed and self._failure is None:
                            self._flush_pending()
                self._commit.flush()
                if self._config.max_segment_age is not None:
                    with self._lock:
                        writer = self._writer
                        if (
                            writer is not None
                            and not self._closed
                            and self._failure is None
                            and self._aged(writer, self._config.clock())
                        ):
                            self._rotate_locked("age")
            except Exception:  # the failure is recorded; appenders see WalFailedError
                return

    # -- closing --------------------------------------------------------------------------

    def close(self) -> None:
        """Make every appended record durable, then release the files and the lock."""
        if self._closed:
            return
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
        flush_error: BaseException | None = None
        with self._lock:
            if self._closed:
                return
            if self._pending and self._failure is None:
                try:
                    self._flush_pending()
                except BaseException as exc:  # raised once the files are released
                    flush_error = exc
            self._closed = True
            writer = self._writer
        self._commit.close()  # followers waiting for records end their iteration
        handle = self._lock_handle
        try:
            if flush_error is not None:
                raise flush_error
            if writer is not None and self._failure is None:
                self._commit.wait_durable(self._commit.written_lsn, lead=True)
                if handle is not None:
                    publish_durable(handle, self._commit.durable_lsn, closed=True)
        finally:
            if writer is not None:
                writer.close()
            if handle is not None:
                handle.close()

    def __enter__(self) -> Wal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("failed" if self._failure else "open")
        return f"<segwal.Wal {self._path!r} {state} LSNs {self.first_lsn}..{self.last_lsn}>"

    # -- many batches in one write, and the observer hooks (segwal.aio, segwal.metrics) --

    def append_many(
        self, requests: Sequence[tuple[Iterable[bytes | bytearray | memoryview], int]]
    ) -> list[range | Exception]:
        """Append several batches with one write and (sync="always") one barrier.

        Each ``(payloads, type)`` request stays its own batch, all-or-nothing after a crash,
        and is checked on its own: a bad one (a payload that is not bytes-like or too large,
        a bad type) gets its exception in the result, in its place, and the others are
        appended. The batches of one call share one timestamp. What concerns the log as a
        whole (closed, readonly, failed, a failed write or barrier) raises, and then no
        request of the call is acknowledged.
        """
        results: list[range | Exception] = []
        with self._lock:
            writer = self._check_writable()
            ts = self._stamp()
            chunks: list[bytes | bytearray] = []
            pending = 0  # bytes in chunks, not yet written
            next_lsn = writer.last_lsn + 1
            for payloads, record_type in requests:
                try:
                    items = [_payload(p, i) for i, p in enumerate(payloads)]
                    _check_type(record_type)
                    lengths = list(map(len, items))
                    self._check_sizes(lengths)
                    last = next_lsn + len(items) - 1
                    if last > MAX_LSN:
                        raise _exhausted()
                except (TypeError, ValueError) as exc:  # InvalidPayload-, RecordTooLarge-, Config-
                    results.append(exc)
                    continue
                if not items:
                    results.append(range(next_lsn, next_lsn))
                    continue
                largest = max(lengths)
                data = self._encode_batch(writer, next_lsn, record_type, ts, items, lengths)
                limit = self._config.segment_bytes
                if chunks and (
                    largest > writer.header.max_record_bytes
                    or writer.offset + pending + len(data) + SEAL_SIZE > limit
                ):
                    # It does not fit behind what is gathered: write that first.
                    self._write(writer, b"".join(chunks), next_lsn - 1, ts)
                    chunks, pending = [], 0
                if not chunks and self._rotation_due(writer, len(data), largest, ts):
                    writer = self._rotate_for_append(writer, len(data), largest, ts)
                    data = self._encode_batch(writer, next_lsn, record_type, ts, items, lengths)
                chunks.append(data)
                pending += len(data)
                results.append(range(next_lsn, last + 1))
                next_lsn = last + 1
                counters = self._counters
                counters["appends"] += 1
                counters["records"] += len(items)
                counters["payload_bytes"] += sum(lengths)
            if chunks:
                whole = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                self._write(writer, whole, next_lsn - 1, ts)
        if self._config.sync == "always" and next_lsn - 1 > self._commit.durable_lsn:
            self._commit.wait_durable(next_lsn - 1, lead=True)
        return results

    def add_durable_observer(self, callback: Callable[[int], None]) -> Callable[[], None]:
        """Call ``callback(durable_lsn)`` whenever the durable LSN advances; returns a function
        that removes it.

        The hook for waiting on durability without polling (``segwal.aio`` wakes its
        followers with it). The callback runs on the thread that ran the barrier (an
        appender, the interval flusher, ``sync``, ``rotate`` or ``close``), outside the group
        commit's lock but, after a seal, under the log's lock: it must be quick and must not
        call back into the log; an exception it raises is logged and ignored. Never called
        on a readonly log (nothing advances it in this process; ``refresh()`` picks up
        another process's progress).
        """
        return self._telemetry.add_durable(callback)

    def add_fsync_observer(self, callback: Callable[[float], None]) -> Callable[[], None]:
        """Call ``callback(seconds)`` after each group-commit fdatasync with its duration;
        returns a function that removes it (``segwal.metrics`` feeds histograms with it).
        Same rules as :meth:`add_durable_observer`."""
        return self._telemetry.add_fsync(callback)
