"""segwal for asyncio: the same log, awaited instead of blocked on.

    import segwal.aio

    async with segwal.aio.open("/var/lib/app/wal") as wal:
        lsn = await wal.append(b"change")           # durable when it returns (sync="always")
        lsns = await wal.append_batch([b"a", b"b"])  # atomic -> range
        async for record in wal.replay(from_lsn=1):
            ...
        async for record in wal.follow(lsn, timeout=5.0):
            ...

**Writes.** Each log has one writer thread (a daemon, ``segwal-aio-writer``) fed by a queue.
Each time it wakes it takes *everything* waiting, appends it with one call of
:meth:`segwal.Wal.append_many` (one write, then with ``sync="always"`` one ``fdatasync``) and
resolves every caller's future on its own loop with ``call_soon_threadsafe``; a loop that has
closed meanwhile is skipped. While that barrier runs the next callers queue up, so 1,000
concurrent ``await wal.append(...)`` share a handful of fsyncs, not 1,000. Every call stays its
own batch (its own record type, all-or-nothing after a crash), and one caller's bad payload
fails only that caller.

**Cancellation.** Cancelling an ``append`` or ``append_batch`` cancels the *wait*, not
necessarily the write. If the writer thread had not yet taken the request, it is dropped and
never written; if it had, the batch is written whole and becomes durable like the others (a
batch is never partial). The caller cannot tell which from the ``CancelledError``. To find
out, note ``wal.next_lsn`` before appending and put a key of your own in the payload, then
look for it with ``replay(from_lsn=noted)`` after ``await wal.sync()``; or, when you need the
LSNs whatever happens, shield the append (``await asyncio.shield(task)``) and cancel only the
code around it.

**Reads.** ``read``, ``read_batch``, ``replay``, ``replay_frames`` and ``follow`` run the
blocking reads on the loop's default executor, one page (``read_batch``: up to
``max_records`` records or about ``max_bytes`` of payload; ``replay_frames``: whole frames,
about ``max_bytes`` of payload) per thread hop, never one record per hop. Like the blocking API,
they see only durable records.

**Following.** On a log opened for writing, ``follow`` never polls: it awaits a future that
the log's observer hook (:meth:`segwal.Wal.observe`, ``segwal.events.Durable``) resolves
when the durable LSN passes what it has read, in whatever thread ran the barrier. On a
readonly log the writer is another process and nothing in this one is told; ``follow`` then polls
``read_batch`` (which re-reads the directory listing and the ``LOCK`` file the writer
publishes its durable LSN in), backing off from 0.5 ms to 20 ms between empty polls, like the
blocking ``follow``: an idle follower costs about 50 small thread hops a second, and a new
record is seen within ~20 ms.

**Threads and exit.** ``close()`` stops and joins the writer thread: no thread of this module
outlives it. A log that is never closed emits a ``ResourceWarning`` when it is garbage
collected (and its writer thread then closes the log); the writer thread is a daemon blocked
on its queue, so it never keeps the interpreter from exiting (aiosqlite's non-daemon thread
did). A process that exits without closing leaves the log as a crash would: everything
acknowledged is durable, and the next open recovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import warnings
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Iterable
from os import PathLike, fspath
from time import monotonic
from typing import Any, TypeVar

import segwal
from segwal import (
    Batch,
    ClosedError,
    Cursor,
    FrameRecords,
    NotFoundError,
    ReaderFellBehindError,
    ReadOnlyError,
    Record,
    RecoveryReport,
    SegmentInfo,
    Stats,
    TruncateResult,
    Wal,
    events,
)

__all__ = ["AsyncCursor", "AsyncWal", "open"]

T = TypeVar("T")
Payload = bytes | bytearray | memoryview

_PAGE_RECORDS = 1000
_PAGE_BYTES = 1 << 20
_POLL_FIRST = 0.0005  # readonly follow: first pause after an empty poll, doubling ...
_POLL_MAX = 0.02  # ... up to this


def _settle(future: asyncio.Future[Any], result: object) -> None:
    """On the future's loop: deliver a result or an exception, unless it was cancelled."""
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def _resolve(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: object) -> None:
    """From any thread: settle ``future`` on ``loop``; a closed loop has nobody to tell."""
    if loop.is_closed():
        return
    with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
        loop.call_soon_threadsafe(_settle, future, result)


def _frozen(payload: Any) -> Any:
    # A mutable buffer could change before the writer thread reads it: copy it now. Anything
    # else goes as it is and append_many reports what is wrong with it to this caller only.
    if payload.__class__ is bytes:
        return payload
    if isinstance(payload, bytearray | memoryview):
        return bytes(payload)
    return payload


class _Append:
    __slots__ = ("cancelled", "future", "loop", "payloads", "type")

    def __init__(
        self, payloads: list[Any], record_type: int, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.payloads = payloads
        self.type = record_type
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.cancelled = False  # set by the caller's loop; read by the writer thread


class _Control:
    __slots__ = ("future", "kind", "loop")

    def __init__(self, kind: str, loop: asyncio.AbstractEventLoop | None) -> None:
        self.kind = kind  # "sync" or "close"
        self.loop = loop
        self.future: asyncio.Future[Any] | None = loop.create_future() if loop else None


class _Writer:
    """The writer thread of one log and its queue. Holds no reference to the AsyncWal, so an
    unclosed AsyncWal can be collected (and warn) while this thread still runs."""

    def __init__(self, wal: Wal) -> None:
        self._wal = wal
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[_Append | _Control] = deque()
        self._closing = False
        self.drains = 0  # times the thread took what was waiting (one append_many each)
        self.thread = threading.Thread(
            target=self._run, name=f"segwal-aio-writer {wal.path}", daemon=True
        )
        self.thread.start()

    def submit(self, item: _Append | _Control) -> None:
        with self._cond:
            if self._closing:
                raise ClosedError(f"the log at {self._wal.path} is closed")
            if isinstance(item, _Control) and item.kind == "close":
                self._closing = True
            self._queue.append(item)
            self._cond.notify()

    def _run(self) -> None:
        wal = self._wal
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                items = list(self._queue)
                self._queue.clear()
            self.drains += 1
            appends = [i for i in items if isinstance(i, _Append) and not i.cancelled]
            if appends:
                results: list[Any]
                try:
                    results = wal.append_many([(a.payloads, a.type) for a in appends])
                except Exception as exc:  # the log as a whole: every caller of the drain
                    results = [exc] * len(appends)
                for append, result in zip(appends, results, strict=True):
                    _resolve(append.loop, append.future, result)
            for item in items:
                if not isinstance(item, _Control):
                    continue
                outcome: object = None
                try:
                    if item.kind == "sync":
                        outcome = wal.sync()
                    else:
                        wal.close()
                except Exception as exc:
                    outcome = exc
                if item.loop is not None and item.future is not None:
                    _resolve(item.loop, item.future, outcome)
                if item.kind == "close":
                    return


class _DurableWaiters:
    """Futures waiting for the durable LSN to pass an LSN, woken by the durable observer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[bool]]] = []
        self._closed = False

    def advanced(self, lsn: int) -> None:
        """The durable-LSN observer: runs on the thread that ran the barrier."""
        with self._lock:
            ready = [w for w in self._waiting if w[0] < lsn]
            if ready:
                self._waiting = [w for w in self._waiting if w[0] >= lsn]
        for _lsn, loop, future in ready:
            _resolve(loop, future, True)

    async def wait_beyond(self, wal: Wal, lsn: int, timeout: float | None) -> bool:
        """True once the durable LSN passes ``lsn``; False on timeout or close."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        entry = (lsn, loop, future)
        with self._lock:
            if self._closed:
                return False
            # Checked under the lock the observer takes: an advance between this check and
            # the wait still finds the entry.
            if wal.durable_lsn > lsn:
                return True
            self._waiting.append(entry)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return False
        finally:
            with self._lock:
                if entry in self._waiting:
                    self._waiting.remove(entry)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            waiting, self._waiting = self._waiting, []
        for _lsn, loop, future in waiting:
            _resolve(loop, future, False)


class AsyncWal:
    """An open log for asyncio code. Get one with ``async with segwal.aio.open(...)``, or wrap
    a :class:`segwal.Wal` you opened yourself with ``AsyncWal(wal)`` (it then owns it)."""

    def __init__(self, wal: Wal) -> None:
        self._wal = wal
        self._close_started = False
        self._closed_future: asyncio.Future[None] | None = None
        self._waiters = _DurableWaiters()
        self._writer = None if wal.readonly else _Writer(wal)
        waiters = self._waiters

        def on_event(event: events.Event) -> None:
            if isinstance(event, events.Durable):
                waiters.advanced(event.lsn)

        self._unobserve = wal.observe(on_event)

    # -- what the blocking log knows, without I/O -----------------------------------------

    @property
    def wal(self) -> Wal:
        """The blocking log underneath, for what this class does not wrap (thread-safe)."""
        return self._wal

    @property
    def path(self) -> str:
        return self._wal.path

    @property
    def first_lsn(self) -> int:
        return self._wal.first_lsn

    @property
    def last_lsn(self) -> int:
        return self._wal.last_lsn

    @property
    def next_lsn(self) -> int:
        return self._wal.next_lsn

    @property
    def durable_lsn(self) -> int:
        return self._wal.durable_lsn

    @property
    def recovery(self) -> RecoveryReport:
        return self._wal.recovery

    @property
    def readonly(self) -> bool:
        return self._wal.readonly

    @property
    def closed(self) -> bool:
        return self._close_started or self._wal.closed

    def stats(self) -> Stats:
        """The log's counters (no I/O; safe to call on the loop)."""
        return self._wal.stats()

    @property
    def writer_drains(self) -> int:
        """How many times the writer thread took what was waiting (one write each)."""
        return self._writer.drains if self._writer is not None else 0

    # -- writing --------------------------------------------------------------------------

    async def append(self, payload: Payload, type: int = 0) -> int:
        """Append one record; return its LSN. With sync="always" it is durable on return."""
        lsns = await self._submit([_frozen(payload)], type)
        return lsns.start

    async def append_batch(self, payloads: Iterable[Payload], type: int = 0) -> range:
        """Append records atomically (all of them after a crash, or none); return their LSNs."""
        try:
            items = [_frozen(p) for p in payloads]
        except TypeError:
            raise segwal.InvalidPayloadError("payloads must be an iterable of bytes") from None
        return await self._submit(items, type)

    async def _submit(self, payloads: list[Any], record_type: int) -> range:
        writer = self._writable()
        request = _Append(payloads, record_type, asyncio.get_running_loop())
        writer.submit(request)
        try:
            result: range = await request.future
        except asyncio.CancelledError:
            request.cancelled = True  # dropped if the writer thread has not taken it yet
            raise
        return result

    async def sync(self) -> int:
        """Make every record appended so far durable; return the durable LSN."""
        writer = self._writable()
        control = _Control("sync", asyncio.get_running_loop())
        writer.submit(control)
        assert control.future is not None
        result: int = await control.future
        return result

    async def wait_durable(self, lsn: int, timeout: float | None = None) -> bool:
        """Wait until ``lsn`` is durable; False if ``timeout`` seconds passed first. On a
        log opened for writing this runs a barrier through the writer thread (in every sync
        mode); on a readonly log it polls what the writer process publishes."""
        wal = self._wal
        if wal.durable_lsn >= lsn:
            return True
        if lsn > wal.last_lsn:
            return wal.wait_durable(lsn, 0)  # raises NotFoundError, without I/O
        if self._writer is not None:
            try:
                await asyncio.wait_for(self.sync(), timeout)
            except TimeoutError:
                return False
            return wal.durable_lsn >= lsn
        deadline = None if timeout is None else monotonic() + timeout
        pause = _POLL_FIRST
        while True:
            await self.refresh()
            if wal.durable_lsn >= lsn:
                return True
            if deadline is not None and monotonic() >= deadline:
                return False
            await asyncio.sleep(pause)
            pause = min(pause * 2, _POLL_MAX)

    def _writable(self) -> _Writer:
        if self._close_started:
            raise ClosedError(f"the log at {self.path} is closed")
        if self._writer is None:
            raise ReadOnlyError(f"the log at {self.path} was opened readonly")
        return self._writer

    # -- reading --------------------------------------------------------------------------

    async def _call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(function, *args, **kwargs))

    async def read(self, lsn: int) -> Record:
        """The durable record with this LSN."""
        return await self._call(self._wal.read, lsn)

    async def read_batch(
        self, from_lsn: int, *, max_records: int = _PAGE_RECORDS, max_bytes: int = _PAGE_BYTES
    ) -> Batch:
        """One page of durable records from ``from_lsn`` (one thread hop)."""
        return await self._call(
            self._wal.read_batch, from_lsn, max_records=max_records, max_bytes=max_bytes
        )

    async def lsn_at(self, timestamp_us: int) -> int:
        return await self._call(self._wal.lsn_at, timestamp_us)

    def _bounds(self) -> tuple[int, int]:
        # In a worker thread: a readonly log looks at the directory again first.
        self._wal.refresh()
        wal = self._wal
        return wal.first_lsn, min(wal.last_lsn, wal.durable_lsn)

    async def _page(self, from_lsn: int, max_records: int, max_bytes: int) -> Batch:
        try:
            return await self.read_batch(from_lsn, max_records=max_records, max_bytes=max_bytes)
        except ReaderFellBehindError:
            raise
        except NotFoundError as exc:
            raise ReaderFellBehindError(
                f"LSN {from_lsn} is no longer in the log, which now starts at LSN {exc.first_lsn}",
                lsn=from_lsn,
                first_lsn=exc.first_lsn,
            ) from exc

    async def replay(
        self,
        from_lsn: int | None = None,
        to_lsn: int | None = None,
        *,
        max_records: int = _PAGE_RECORDS,
        max_bytes: int = _PAGE_BYTES,
    ) -> AsyncIterator[Record]:
        """Durable records ``from_lsn..to_lsn`` (inclusive), a page per thread hop. The range
        is fixed when the iteration starts, as with the blocking ``replay``."""
        first, limit = await self._call(self._bounds)
        next_lsn = first if from_lsn is None else max(from_lsn, first)
        stop = limit if to_lsn is None else min(to_lsn, limit)
        while next_lsn <= stop:
            page = await self._page(next_lsn, max_records, max_bytes)
            if not page.records:
                return
            for record in page.records:
                if record.lsn > stop:
                    return
                yield record
            next_lsn = page.next_lsn

    def _frame_page(self, from_lsn: int, stop: int, max_bytes: int) -> list[FrameRecords]:
        """In a worker thread: the frames from ``from_lsn`` up to ``stop``, about
        ``max_bytes`` of payload (at least one frame), from one blocking ``replay_frames``."""
        frames: list[FrameRecords] = []
        size = 0
        stream = self._wal.replay_frames(from_lsn, stop)
        try:
            for frame in stream:
                if not frames and frame.first_lsn != from_lsn:
                    # replay_frames starts at the log's first LSN: retention got here first.
                    raise ReaderFellBehindError(
                        f"LSN {from_lsn} is no longer in the log, which now starts at LSN "
                        f"{frame.first_lsn}",
                        lsn=from_lsn,
                        first_lsn=frame.first_lsn,
                    )
                frames.append(frame)
                size += sum(map(len, frame.payloads))
                if size >= max_bytes:
                    break
        finally:
            close = getattr(stream, "close", None)  # a generator: lets go of its segments
            if close is not None:
                close()
        return frames

    async def replay_frames(
        self,
        from_lsn: int | None = None,
        to_lsn: int | None = None,
        *,
        max_bytes: int = _PAGE_BYTES,
    ) -> AsyncIterator[FrameRecords]:
        """Durable records ``from_lsn..to_lsn`` (inclusive) one stored frame at a time, as
        :meth:`segwal.Wal.replay_frames` gives them: about ``max_bytes`` of payload (at least
        one frame) per thread hop. The range is fixed when the iteration starts, as with
        ``replay``; raises ReaderFellBehindError when retention removes what it needs."""
        first, limit = await self._call(self._bounds)
        next_lsn = first if from_lsn is None else max(from_lsn, first)
        stop = limit if to_lsn is None else min(to_lsn, limit)
        while next_lsn <= stop:
            page = await self._call(self._frame_page, next_lsn, stop, max_bytes)
            if not page:
                return
            for frame in page:
                yield frame
            next_lsn = page[-1].last_lsn + 1

    async def follow(
        self,
        from_lsn: int | None = None,
        *,
        timeout: float | None = None,
        max_records: int = _PAGE_RECORDS,
        max_bytes: int = _PAGE_BYTES,
    ) -> AsyncIterator[Record]:
        """Durable records from ``from_lsn`` as they become durable, waiting for more.

        ``timeout`` is how long to wait for the next record; when it passes with nothing
        new, the iteration ends (None: until the log closes). Raises
        ReaderFellBehindError when retention removed what it needs, or when a rewind
        (``truncate_after``) replaced records it had yielded. See the module's
        docstring for how it waits (woken by the writer; polling on a readonly log).
        """
        wal = self._wal
        seen = wal.rewinds
        if from_lsn is None:
            from_lsn = (await self._call(self._bounds))[0]
        next_lsn = from_lsn
        pause = _POLL_FIRST
        idle_since = monotonic()
        while not self.closed:
            try:
                page = await self._page(next_lsn, max_records, max_bytes)
            except ClosedError:
                return
            if wal.rewinds != seen:
                # Records this follower yielded may have been replaced by a rewind: never go
                # on at the next LSN as if the history were the same.
                lowest = wal.rewound_below(seen, next_lsn - 1)
                if lowest is not None:
                    raise ReaderFellBehindError(
                        f"the log was rewound to LSN {lowest} (truncate_after) after this "
                        f"follower had read up to LSN {next_lsn - 1}",
                        lsn=lowest + 1,
                        first_lsn=wal.first_lsn,
                    )
                seen = wal.rewinds
                continue  # the page may predate the rewind: read it again
            if page.records:
                for record in page.records:
                    yield record
                next_lsn = page.next_lsn
                pause, idle_since = _POLL_FIRST, monotonic()
                continue
            if not wal.readonly:
                if not await self._waiters.wait_beyond(wal, next_lsn - 1, timeout):
                    return
                continue
            # Readonly: the writer is another process; poll with backoff.
            if timeout is not None and monotonic() - idle_since >= timeout:
                return
            wait = pause
            if timeout is not None:
                wait = min(wait, max(0.0, idle_since + timeout - monotonic()))
            await asyncio.sleep(wait)
            pause = min(pause * 2, _POLL_MAX)

    # -- everything else: one thread hop each ----------------------------------------------

    async def cursor(self, name: str, *, start: int | None = None) -> AsyncCursor:
        """The named, persistent consumer position ``name`` (created at ``start``)."""
        return AsyncCursor(self, await self._call(self._wal.cursor, name, start=start))

    async def cursors(self) -> dict[str, int]:
        return await self._call(self._wal.cursors)

    async def segments(self) -> list[SegmentInfo]:
        return await self._call(self._wal.segments)

    async def rotate(self) -> SegmentInfo | None:
        return await self._call(self._wal.rotate)

    async def truncate_before(self, lsn: int) -> TruncateResult:
        return await self._call(self._wal.truncate_before, lsn)

    async def truncate_after(self, lsn: int) -> TruncateResult:
        return await self._call(self._wal.truncate_after, lsn)

    async def hold(self, name: str, lsn: int) -> None:
        await self._call(self._wal.hold, name, lsn)

    async def release(self, name: str) -> bool:
        return await self._call(self._wal.release, name)

    async def refresh(self) -> None:
        await self._call(self._wal.refresh)

    # -- closing --------------------------------------------------------------------------

    async def close(self) -> None:
        """Write and make durable what is queued, close the log, and join the writer thread.
        Followers end their iteration. Safe to call twice (and from several tasks)."""
        if self._close_started:
            if self._closed_future is not None:
                await asyncio.shield(self._closed_future)
            return
        self._close_started = True
        loop = asyncio.get_running_loop()
        self._closed_future = loop.create_future()
        try:
            self._waiters.close()
            self._unobserve()
            if self._writer is not None:
                control = _Control("close", loop)
                self._writer.submit(control)
                assert control.future is not None
                try:
                    await asyncio.shield(control.future)
                finally:
                    # The thread's last act was to resolve the future: this returns at once.
                    self._writer.thread.join()
            else:
                await self._call(self._wal.close)
        finally:
            self._closed_future.set_result(None)

    async def __aenter__(self) -> AsyncWal:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __del__(self) -> None:
        if getattr(self, "_close_started", True):
            return
        try:
            warnings.warn(
                f"segwal.aio log {self._wal.path!r} was never closed; use 'async with' or "
                "'await wal.close()'",
                ResourceWarning,
                source=self,
                stacklevel=1,
            )
        finally:
            self._waiters.close()
            if self._writer is not None:
                # The writer thread closes the log; nothing waits for it.
                with contextlib.suppress(ClosedError):
                    self._writer.submit(_Control("close", None))

    def __repr__(self) -> str:
        return f"<segwal.aio.AsyncWal {self._wal!r}>"


class AsyncCursor:
    """A named consumer position (:class:`segwal.Cursor`) for asyncio code."""

    def __init__(self, wal: AsyncWal, cursor: Cursor) -> None:
        self._wal = wal
        self._cursor = cursor

    @property
    def name(self) -> str:
        return self._cursor.name

    @property
    def position(self) -> int:
        """The next LSN to read."""
        return self._cursor.position

    async def read_batch(
        self, *, max_records: int = _PAGE_RECORDS, max_bytes: int = _PAGE_BYTES
    ) -> Batch:
        """The next page from the cursor's position (the position does not move)."""
        return await self._wal.read_batch(
            self.position, max_records=max_records, max_bytes=max_bytes
        )

    def follow(self, *, timeout: float | None = None) -> AsyncIterator[Record]:
        """Records from the cursor's position as they become durable."""
        return self._wal.follow(self.position, timeout=timeout)

    async def commit(self, lsn: int) -> None:
        """Records up to ``lsn`` are processed: the next read starts at ``lsn + 1``."""
        await self._wal._call(self._cursor.commit, lsn)

    async def delete(self) -> bool:
        return await self._wal._call(self._cursor.delete)

    def __repr__(self) -> str:
        return f"<segwal.aio.AsyncCursor {self.name!r} at LSN {self.position}>"


class _Opening:
    """What ``open`` returns: ``async with`` it, or ``await`` it for an AsyncWal."""

    def __init__(self, path: str, options: dict[str, Any]) -> None:
        self._path = path
        self._options = options
        self._wal: AsyncWal | None = None

    async def _open(self) -> AsyncWal:
        loop = asyncio.get_running_loop()
        wal = await loop.run_in_executor(
            None, functools.partial(segwal.open, self._path, **self._options)
        )
        return AsyncWal(wal)

    def __await__(self) -> Generator[Any, None, AsyncWal]:
        return self._open().__await__()

    async def __aenter__(self) -> AsyncWal:
        self._wal = await self._open()
        return self._wal

    async def __aexit__(self, *exc_info: object) -> None:
        if self._wal is not None:
            await self._wal.close()


def open(path: str | PathLike[str], **options: Any) -> _Opening:  # as segwal.open
    """Open (or create) the log in ``path`` for asyncio code; the options are those of
    :func:`segwal.open`. Use ``async with segwal.aio.open(path) as wal`` or
    ``wal = await segwal.aio.open(path)`` (then ``await wal.close()``). Opening (recovery)
    runs on the loop's default executor."""
    return _Opening(fspath(path), options)
