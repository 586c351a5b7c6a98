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
import warnings
from collections.abc import AsyncIterator, Generator, Iterable
from os import PathLike, fspath
from time import monotonic
from typing import Any

import segwal
from segwal import (
    Batch,
    ClosedError,
    Cursor,
    ReadOnlyError,
    Record,
    RecoveryReport,
    SegmentInfo,
    Stats,
    TruncateResult,
    Wal,
    events,
)
from segwal.aioreads import _PAGE_BYTES, _PAGE_RECORDS, _POLL_FIRST, _POLL_MAX, AsyncReads
from segwal.aiowriter import _Append, _Control, _DurableWaiters, _frozen, _Writer

__all__ = ["AsyncCursor", "AsyncWal", "open"]

Payload = bytes | bytearray | memoryview


class AsyncWal(AsyncReads):
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
