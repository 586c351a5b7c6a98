"""The uploader: sealed segments to the archive, in LSN order, in the background.

Per segment (``Uploader._upload``; docs/DURABILITY.md, "Archive"):

1. re-read the sealed file and re-check its seal digest (a segment damaged on disk is
   never archived as if it were good);
2. raise ``in_flight`` in ``ARCHIVE.state`` durably if this segment goes past it, so a
   rewind later knows these LSNs may be in the store even if the answer is lost;
3. ``put_if_absent`` under ``g/<generation>/seg/<first:020d>.wal``; a 412 downloads the
   object and compares: equal bytes are an earlier upload whose answer was lost (success),
   other bytes are ``ArchiveConflictError`` (uploading stops, local data is kept);
4. advance the position: for a log opened with ``archive=``, the ``archive`` hold in
   META (one atomic, fsynced META replace), after each batch and every ``SAVE_EVERY``
   seconds within one, so retention deletes a segment only once META says it is archived.

A crash between 3 and 4 repeats the PUT at the next open and gets the equal-content 412.
Store failures never reach the log: they are counted, shown in ``status()`` and retried
with exponential backoff.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from segwal.archive import dictobjects, keyobjects
from segwal.archive.objects import (
    ARCHIVE_KEY,
    archive_body,
    check_segment,
    digest_of,
    gen_body,
    gen_key,
    metadata_of,
    new_generation,
    parse_archive,
    segment_key,
)
from segwal.archive.state import Position, UploadState, load_state, store_state
from segwal.archive.store import ObjectStore
from segwal.archive.urls import probe
from segwal.errors import (
    ArchiveAccessError,
    ArchiveConflictError,
    ArchiveCorruptError,
    ArchiveError,
    ArchiveNotFoundError,
    ArchiveUnavailableError,
    ClosedError,
)
from segwal.events import Sealed
from segwal.format.layout import HEADER_SIZE, decode_header
from segwal.log.wal import Wal
from segwal.types import SegmentInfo

SAVE_EVERY = 0.5  # seconds between hold advances within a batch of uploads


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchiveStatus:
    """Where the archive of an open log stands (``wal.archive_status()``)."""

    url: str
    generation: str | None
    archived_lsn: int  # every record up to here is in the archive
    last_lsn: int
    lag_segments: int  # sealed segments not yet archived
    lag_bytes: int  # their bytes
    lag_seconds: float  # age of the oldest record not yet archived (0 when none)
    uploads: int  # segments uploaded since open
    uploaded_bytes: int
    retries: int  # failed store requests since open
    last_error: str | None
    last_error_at: float | None  # time.time() of the last error
    stopped: str | None  # why uploading stopped for good (a conflict), else None
    running: bool


class Uploader:
    """Uploads a log's sealed segments to one store (see the module)."""

    def __init__(
        self,
        wal: Wal,
        store: ObjectStore,
        *,
        cursor: bool = False,
        max_segment_age: float | None = None,
        poll_interval: float = 1.0,
        base_delay: float = 0.2,
        max_delay: float = 30.0,
    ) -> None:
        self.wal = wal
        self.store = store
        self.position = Position(wal, cursor=cursor)
        self.max_segment_age = max_segment_age
        self.poll_interval = poll_interval
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.busy = threading.Lock()  # held for one upload attempt; a rewind waits for it
        self._changed = threading.Condition()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._stop_type: type[ArchiveError] = ArchiveConflictError
        self._thread: threading.Thread | None = None
        self._archive_checked = False
        self._gen_created = False
        self._active_since: tuple[int, float] | None = None
        self._dictionaries: dict[int, str] = {}  # id -> dicts/ key this uploader made sure of
        self.archived = self.position.load()
        self.uploads = 0
        self.uploaded_bytes = 0
        self.retries = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.stopped: str | None = None
        # ARCHIVE.state is written only under this lock and never once close() gave up on
        # the worker (``abandon``): a reopened log's uploader owns the file from then on.
        self._state_lock = threading.Lock()
        self._abandoned = False
        self.state = self._initial_state()
        if not cursor:
            self.position.save(self.archived)  # the hold exists before anything is deleted
        self._saved_lsn, self._saved_at = self.archived, time.monotonic()

    # -- state ----------------------------------------------------------------------------

    def _initial_state(self) -> UploadState:
        wal = self.wal
        state = load_state(wal.path, wal.filesystem)
        if state is None or state.url != self.store.url:
            # A log not archived here before: everything it holds goes to a new generation.
            self.archived = wal.first_lsn - 1
            state = UploadState(
                url=self.store.url,
                generation=None,
                parent=None,
                fork_lsn=self.archived,
                in_flight=self.archived,
                rewinds=wal.rewinds,
            )
            if not self.position_is_cursor:
                self.position.save(self.archived)
            store_state(wal.path, state, wal.filesystem)
            return state
        if state.rewinds != wal.rewinds:
            # Rewound while no archiver ran (``segwal truncate``): as if it ran now.
            lowest = wal.rewound_below(state.rewinds, state.in_flight)
            self.state = state
            if lowest is not None:
                self._rewound(lowest)
            else:
                state.rewinds = wal.rewinds
                store_state(wal.path, state, wal.filesystem)
        return state

    @property
    def position_is_cursor(self) -> bool:
        return self.position._cursor is not None

    def log_id(self) -> bytes | None:
        segments = self.wal.segments()
        if not segments:
            return None
        return decode_header(self._read(segments[0].path, HEADER_SIZE)).log_id

    def _read(self, path: str, size: int | None = None) -> bytes:
        """A file of the log (all of it, or its first ``size`` bytes), through the log's
        file system."""
        handle = self.wal.filesystem.open_read(path)
        try:
            return handle.pread(handle.size() if size is None else size, 0)
        finally:
            handle.close()

    # -- checks at open -------------------------------------------------------------------

    def probe(self) -> None:
        """Fail at open on clear misconfiguration: no credentials or bucket (access errors
        pass through), a store that ignores conditional creates, a prefix of another log.
        A store that is down is not misconfigured: that is only recorded."""
        try:
            self.check_archive()
            probe(self.store)  # put, read back, a second conditional create, delete
        except ArchiveUnavailableError as exc:
            self.record_error(exc)

    def check_archive(self) -> None:
        """``ARCHIVE`` names this log, or is created naming it (once, conditionally)."""
        if self._archive_checked:
            return
        log_id = self.log_id()
        if log_id is None:
            return
        store = self.store
        try:
            found = parse_archive(store.get(ARCHIVE_KEY), store.url)
        except ArchiveNotFoundError:
            if store.put_if_absent(ARCHIVE_KEY, archive_body(log_id)):
                self._archive_checked = True
                return
            found = parse_archive(store.get(ARCHIVE_KEY), store.url)
        if found != log_id:
            raise ArchiveConflictError(
                f"the prefix belongs to another log (log id {found.hex()}, this log is "
                f"{log_id.hex()})",
                url=store.url,
                key=ARCHIVE_KEY,
            )
        self._archive_checked = True

    # -- the worker -----------------------------------------------------------------------

    def start(self) -> None:
        unsubscribe = self.wal.observe(self._on_event)
        self._unsubscribe = unsubscribe
        self._thread = threading.Thread(target=self._run, name="segwal-archive", daemon=True)
        self._thread.start()

    def _on_event(self, event: object) -> None:
        if isinstance(event, Sealed):
            self._wake.set()

    def stop(self, timeout: float) -> bool:
        """Stop the worker; True when it ended within ``timeout`` seconds."""
        self._stop.set()
        self._wake.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        delay = self.base_delay
        while not self._stop.is_set():
            try:
                self.run_once()
                delay = self.base_delay
                wait = self.poll_interval
            except (ArchiveUnavailableError, ArchiveAccessError) as exc:
                self.record_error(exc)
                wait, delay = delay, min(delay * 2, self.max_delay)
            except ArchiveError as exc:  # a conflict or a damaged local segment: stop
                self._stopped_by(exc)
                return
            except ClosedError:
                self._notify()
                return
            except Exception as exc:  # a dead worker must say why, not vanish
                self._stopped_by(exc)
                return
            self._wake.wait(wait)
            self._wake.clear()

    def run_once(self) -> int:
        """Upload every sealed segment not yet archived; the number uploaded."""
        self.check_archive()
        self._rotate_if_aged()
        done = 0
        # A rewind during the batch (truncate_after) makes the list stale: the batch ends
        # and the next run lists again (a stale entry must never look like damage).
        rewinds = self.wal.rewinds
        pending = [
            s
            for s in self.wal.segments()
            if s.sealed and s.last_lsn > self.archived and s.record_count
        ]
        with self.busy:
            self._sync_keys()  # a rewrap or a new log key reaches the archive by itself
        if pending:
            # One durable mark for the whole batch: an upper bound of what may reach the
            # store is as safe as the exact value (a rewind below it starts a generation).
            with self.busy:
                self._mark_in_flight(pending[-1].last_lsn)
        try:
            for info in pending:
                if self._stop.is_set() and self._thread is not None:
                    break
                with self.busy:
                    if self.wal.rewinds != rewinds:
                        break
                    if info.last_lsn <= self.archived:
                        continue
                    self._upload(info)
                done += 1
        finally:
            with self.busy:
                self._save_position(force=True)
        return done

    def _rotate_if_aged(self) -> None:
        """Seal a quiet active segment once its first record is ``max_segment_age`` old, so
        the archive's recovery point stays bounded (the log rotates on age only when it
        appends)."""
        if self.max_segment_age is None or self.wal.readonly:
            return
        segments = self.wal.segments()
        active = segments[-1] if segments else None
        if active is None or active.sealed or active.record_count == 0:
            self._active_since = None
            return
        now = time.monotonic()
        if self._active_since is None or self._active_since[0] != active.first_lsn:
            self._active_since = (active.first_lsn, now)
        elif now - self._active_since[1] >= self.max_segment_age:
            self.wal.rotate()

    def _upload(self, info: SegmentInfo) -> None:
        store, state = self.store, self.state
        if info.first_lsn != self.archived + 1:
            raise ArchiveCorruptError(
                f"the next segment to archive starts at LSN {info.first_lsn}, not "
                f"{self.archived + 1}",
                url=store.url,
                first_lsn=info.first_lsn,
                last_lsn=info.last_lsn,
            )
        data = self._read(info.path)
        self._ensure_generation()
        assert state.generation is not None
        key = segment_key(state.generation, info.first_lsn)
        facts = check_segment(data, key=info.path, url=store.url, first_lsn=info.first_lsn)
        metadata = metadata_of(facts)
        if facts.header.key_id:
            # The wrapped keys go first: a segment in the archive is never without them.
            metadata["keys"] = self._sync_keys()
        if facts.header.dict_id:
            # So does its compression dictionary (dictobjects.py), content-addressed.
            metadata["dictionary"] = self._sync_dictionary(facts.header.dict_id)
        self._mark_in_flight(facts.last_lsn)
        self._check_live()  # a request that hung past close() sends nothing more
        created = store.put_if_absent(key, data, metadata)
        if not created and store.get(key) != data:
            raise ArchiveConflictError(
                f"another segment is archived for LSN {info.first_lsn} of generation "
                f"{state.generation} (two writers on one prefix, or a rewound log "
                "reusing names); uploading stopped, the local segment is kept",
                url=store.url,
                key=key,
            )
        with self._changed:
            self.archived = facts.last_lsn
            self.uploads += 1
            self.uploaded_bytes += len(data)
            self._changed.notify_all()
        self._save_position(force=False)

    def _save_position(self, *, force: bool) -> None:
        """Advance the ``archive`` hold (a META replace) to what the store holds: after a
        batch, and every ``SAVE_EVERY`` seconds within one. Behind the store is safe (a
        crash repeats those PUTs into equal 412s); ahead of it never happens."""
        now = time.monotonic()
        if self.archived > self._saved_lsn and (force or now - self._saved_at >= SAVE_EVERY):
            self.position.save(self.archived)
            with self._changed:
                self._saved_lsn, self._saved_at = self.archived, now
                self._changed.notify_all()

    def _mark_in_flight(self, lsn: int) -> None:
        """Record durably, before any PUT, that LSNs up to ``lsn`` may be in the store."""
        state = self.state
        if lsn > state.in_flight:
            state.in_flight = lsn
            self._store_state()

    def _sync_keys(self) -> str:
        """Upload the log's ``KEYS`` as ``keys/<digest>.keys`` unless ``ARCHIVE.state`` says
        that digest is already there (call with ``busy`` held); the digest ("" for a log
        that is not encrypted). The object exists before the state says so: a crash between
        repeats the conditional create into an equal 412."""
        data = keyobjects.read_local(self.wal.path, self.wal.filesystem)
        if data is None:
            return ""
        digest = digest_of(data).hex()
        state = self.state
        if state.keys != digest:
            keyobjects.upload(self.store, data)
            state.keys = digest
            self._store_state()
        return digest

    def _sync_dictionary(self, dict_id: int) -> str:
        """Upload the log's dictionary with this id as ``dicts/<digest>.zdict`` (a
        conditional create; once per uploader, an equal 412 after a restart); its key."""
        key = self._dictionaries.get(dict_id)
        if key is None:
            data = dictobjects.read_local(self.wal.path, dict_id, self.wal.filesystem)
            key = self._dictionaries[dict_id] = dictobjects.upload(self.store, data)
        return key

    def _store_state(self) -> None:
        """Replace ``ARCHIVE.state`` with ``self.state``, unless close() gave up on this
        uploader: then ClosedError, which ends the worker without writing."""
        with self._state_lock:
            self._check_live()
            store_state(self.wal.path, self.state, self.wal.filesystem)

    def _check_live(self) -> None:
        if self._abandoned:
            raise ClosedError(
                f"the log {self.wal.path} was closed during this upload; its next open repeats it"
            )

    def abandon(self) -> None:
        """From now on this uploader writes nothing (``close()``, after waiting for it at
        most ``archive_close_timeout``): a worker still stuck in a request may return after
        the log was closed and reopened, and must not replace the new uploader's
        ``ARCHIVE.state`` with its stale one (nor META: the closed Wal refuses its hold).
        Waits only for a state write in progress, a local file replace."""
        with self._state_lock:
            self._abandoned = True

    def _ensure_generation(self) -> None:
        state = self.state
        if state.generation is None:
            state.generation = new_generation()  # durable before its GEN object exists
            state.in_flight = max(state.in_flight, state.fork_lsn)
            self._store_state()
            self._gen_created = False
        if not self._gen_created:
            self.store.put_if_absent(
                gen_key(state.generation), gen_body(state.parent, state.fork_lsn)
            )
            self._gen_created = True

    # -- rewinds --------------------------------------------------------------------------

    def rewound(self, lsn: int) -> None:
        """After ``truncate_after(lsn)`` (call with ``busy`` held): LSNs above ``lsn`` that
        may be in the store now name other bytes, so the next upload starts a generation."""
        self._rewound(lsn)

    def _rewound(self, lsn: int) -> None:
        state, wal = self.state, self.wal
        state.rewinds = wal.rewinds
        if lsn < state.in_flight:
            boundary = wal.first_lsn - 1
            for info in wal.segments():
                if info.sealed and info.last_lsn <= lsn:
                    boundary = info.last_lsn
            fork = min(self.archived, boundary)  # a segment end both sides agree on
            if state.generation is not None and fork > state.fork_lsn:
                # The new generation takes LSNs from this one. Otherwise it takes none (and
                # this one's GEN may never have been created: a crash between naming it in
                # ARCHIVE.state and its PUT), so its parent stays this one's parent.
                state.parent = state.generation
            state.generation = None
            state.fork_lsn = state.in_flight = fork
            self.archived = self._saved_lsn = fork
            self.position.save(fork)
        self._store_state()

    # -- status ---------------------------------------------------------------------------

    def _stopped_by(self, exc: Exception) -> None:
        """The worker ends for good: the reason is kept and every waiter is woken."""
        self.record_error(exc)
        self.stopped = str(exc) if isinstance(exc, ArchiveError) else self.last_error
        self._stop_type = type(exc) if isinstance(exc, ArchiveError) else ArchiveError
        self._notify()

    def record_error(self, exc: Exception) -> None:
        self.retries += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.last_error_at = time.time()

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def wait(self, lsn: int, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while self._saved_lsn < lsn:
                if self.stopped is not None:
                    raise self._stop_type(self.stopped, url=self.store.url)
                thread = self._thread
                if thread is not None and not thread.is_alive():
                    raise ArchiveError("the upload worker is not running", url=self.store.url)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(left if left is not None else 1.0)
        return True

    def status(self, now: Callable[[], float] = time.time) -> ArchiveStatus:
        archived = self.archived
        pending = [s for s in self.wal.segments() if s.last_lsn > archived and s.record_count]
        sealed = [s for s in pending if s.sealed]
        oldest = 0.0
        if pending:
            first = pending[0]
            stamp = first.min_timestamp_us if first.sealed else first.created_us
            oldest = max(0.0, now() - stamp / 1e6)
        thread = self._thread
        return ArchiveStatus(
            url=self.store.url,
            generation=self.state.generation,
            archived_lsn=archived,
            last_lsn=self.wal.last_lsn,
            lag_segments=len(sealed),
            lag_bytes=sum(s.size_bytes for s in sealed),
            lag_seconds=oldest,
            uploads=self.uploads,
            uploaded_bytes=self.uploaded_bytes,
            retries=self.retries,
            last_error=self.last_error,
            last_error_at=self.last_error_at,
            stopped=self.stopped,
            running=thread is not None and thread.is_alive(),
        )
