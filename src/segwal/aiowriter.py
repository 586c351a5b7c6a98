"""The writes of :mod:`segwal.aio`: one writer thread per log, and the durable-LSN waiters.

The writer thread takes everything queued each time it wakes and appends it with one
``Wal.append_many`` (one write, one barrier with sync="always"), then resolves each caller's
future on its own loop; the waiters wake ``follow`` and ``wait_durable`` when the log's
observer reports a durable LSN (see the module docstring of :mod:`segwal.aio`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from typing import Any

from segwal import ClosedError, Wal


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
