"""The reads of :mod:`segwal.aio`: blocking reads run on the loop's default executor.

One page per thread hop (``read_batch``: up to ``max_records`` records or about ``max_bytes``
of payload; ``replay_frames``: whole frames), never one record per hop; ``follow`` waits on
the writer's durable-LSN waiters, or polls with backoff on a readonly log (see the module
docstring of :mod:`segwal.aio`). A mixin of ``AsyncWal``, which sets these attributes.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from time import monotonic
from typing import TYPE_CHECKING, Any, TypeVar

from segwal import (
    Batch,
    ClosedError,
    FrameRecords,
    NotFoundError,
    ReaderFellBehindError,
    Record,
    Wal,
)
from segwal.aiowriter import _DurableWaiters

T = TypeVar("T")

_PAGE_RECORDS = 1000
_PAGE_BYTES = 1 << 20
_POLL_FIRST = 0.0005  # readonly follow: first pause after an empty poll, doubling ...
_POLL_MAX = 0.02  # ... up to this


class AsyncReads:
    """Reading, paged; mixed into ``AsyncWal``."""

    _wal: Wal
    _waiters: _DurableWaiters

    if TYPE_CHECKING:

        @property
        def closed(self) -> bool: ...

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

    def _bounds(self) -> tuple[int, int, int]:
        # In a worker thread: a readonly log looks at the directory again first.
        self._wal.refresh()
        wal = self._wal
        return wal.first_lsn, min(wal.last_lsn, wal.durable_lsn), wal.rewinds

    def _check_rewound(self, seen: int, read_up_to: int) -> None:
        """A page-by-page replay that yielded up to ``read_up_to`` at rewind count ``seen``:
        raise as the blocking replay does when a rewind replaced what it yielded or reads."""
        wal = self._wal
        if wal.rewinds != seen and wal.rewound_below(seen, read_up_to + 1) is not None:
            raise ReaderFellBehindError(
                f"the log was rewound (truncate_after) while a reader needed LSN {read_up_to}",
                lsn=read_up_to,
                first_lsn=wal.first_lsn,
            )

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
        first, limit, seen = await self._call(self._bounds)
        next_lsn = first if from_lsn is None else max(from_lsn, first)
        stop = limit if to_lsn is None else min(to_lsn, limit)
        while next_lsn <= stop:
            page = await self._page(next_lsn, max_records, max_bytes)
            self._check_rewound(seen, page.records[-1].lsn if page.records else next_lsn)
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
        first, limit, seen = await self._call(self._bounds)
        next_lsn = first if from_lsn is None else max(from_lsn, first)
        stop = limit if to_lsn is None else min(to_lsn, limit)
        while next_lsn <= stop:
            page = await self._call(self._frame_page, next_lsn, stop, max_bytes)
            self._check_rewound(seen, page[-1].last_lsn if page else next_lsn)
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
