"""An object store in memory that injects the faults a real one shows, for tests.

It keeps the real store's semantics (``If-None-Match: *`` creates, ranged GETs that never
return short, listings in key order after a key, metadata that a listing may omit) and
adds, on request:

- ``fail(op, times, status)``: the next ``times`` calls of ``op`` raise
  ``ArchiveUnavailableError`` (500, 503, or 503 SlowDown), as a loaded store does;
- ``cut_put(stored=...)``: the next PUT's connection is cut mid-body: the object is stored
  (the answer was lost) or not, and the caller sees ``ArchiveUnavailableError`` either way;
- ``truncate_get(keep, silent=False)``: the next GET of a body longer than ``keep`` bytes
  ends after ``keep`` bytes; a
  conforming client raises (the default), ``silent=True`` returns the short body, as a
  broken proxy or client would, so callers' size checks are tested too;
- ``hide_newest(times)``: the next ``times`` listings miss their newest (last) key, as an
  eventually consistent listing can;
- ``expire_credentials()`` / ``renew_credentials()``, ``drop_bucket()``: every request is
  refused with ``ArchiveAccessError`` until undone;
- ``ignore_conditions``: conditional creates overwrite, as some stores silently do;
- ``latency``: seconds each request takes (a slow store);
- ``hang(op)``: the next call of ``op`` blocks until the returned event is set (a request
  that does not answer), then goes on as usual.

``requests`` counts calls per operation, faults included, to check backoff and costs.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from segwal.archive.store import ObjectInfo
from segwal.errors import (
    ArchiveAccessError,
    ArchiveError,
    ArchiveNotFoundError,
    ArchiveUnavailableError,
)

OPERATIONS = ("put", "get", "head", "list", "delete")
_MESSAGES = {500: "InternalError", 503: "SlowDown"}


@dataclass(slots=True)
class _Object:
    data: bytes
    metadata: dict[str, str]


class MemoryStore:
    """The ``ObjectStore`` protocol over a dict, with fault injection (see the module)."""

    def __init__(self, url: str = "memory://bucket/prefix") -> None:
        self.url = url
        self.objects: dict[str, _Object] = {}
        self.requests: Counter[str] = Counter()
        self.latency = 0.0
        self.ignore_conditions = False
        self._lock = threading.Lock()
        self._failures: dict[str, list[int]] = {op: [] for op in OPERATIONS}
        self._cut_puts: list[bool] = []
        self._short_gets: list[tuple[int, bool]] = []
        self._hide_newest = 0
        self._refusal: str | None = None
        self._hangs: dict[str, list[threading.Event]] = {op: [] for op in OPERATIONS}
        self.closed = False

    # -- faults ---------------------------------------------------------------------------

    def fail(self, op: str, times: int = 1, status: int = 503) -> None:
        """The next ``times`` calls of ``op`` (put, get, head, list, delete) fail with
        ``status`` (500 InternalError, 503 SlowDown, ...)."""
        if op not in OPERATIONS:
            raise ValueError(f"unknown operation {op!r}")
        with self._lock:
            self._failures[op].extend([status] * times)

    def hang(self, op: str) -> threading.Event:
        """The next call of ``op`` blocks until the returned event is set."""
        if op not in OPERATIONS:
            raise ValueError(f"unknown operation {op!r}")
        release = threading.Event()
        with self._lock:
            self._hangs[op].append(release)
        return release

    def cut_put(self, *, stored: bool) -> None:
        """The next PUT is cut mid-body: stored or not, the caller never hears."""
        with self._lock:
            self._cut_puts.append(stored)

    def truncate_get(self, keep: int, *, silent: bool = False) -> None:
        """The next GET of more than ``keep`` bytes stops there (raised, or returned if
        silent)."""
        with self._lock:
            self._short_gets.append((keep, silent))

    def hide_newest(self, times: int = 1) -> None:
        """The next ``times`` listings omit their newest key."""
        with self._lock:
            self._hide_newest += times

    def clear_faults(self) -> None:
        """Forget every queued fault (the store recovers)."""
        with self._lock:
            for queue in self._failures.values():
                queue.clear()
            self._cut_puts.clear()
            self._short_gets.clear()
            self._hide_newest = 0
            self._refusal = None

    def expire_credentials(self) -> None:
        with self._lock:
            self._refusal = "ExpiredToken: the provided token has expired"

    def renew_credentials(self) -> None:
        with self._lock:
            self._refusal = None

    def drop_bucket(self) -> None:
        """The bucket vanishes with everything in it."""
        with self._lock:
            self._refusal = "NoSuchBucket: the specified bucket does not exist"
            self.objects.clear()

    # -- the protocol ---------------------------------------------------------------------

    def _enter(self, op: str, key: str | None) -> None:
        """Count the request, sleep its latency, and raise the fault queued for it."""
        if self.latency:
            time.sleep(self.latency)
        with self._lock:
            hung = self._hangs[op].pop(0) if self._hangs[op] else None
        if hung is not None:
            hung.wait()
        with self._lock:
            self.requests[op] += 1
            if self.closed:
                raise ArchiveUnavailableError("store closed", url=self.url, key=key)
            if self._refusal is not None:
                raise ArchiveAccessError(self._refusal, url=self.url, key=key)
            queue = self._failures[op]
            if queue and not (op == "put" and self._cut_puts):  # a queued cut comes first
                status = queue.pop(0)
                raise ArchiveUnavailableError(
                    f"HTTP {status} {_MESSAGES.get(status, 'error')}",
                    url=self.url,
                    key=key,
                    status=status,
                )

    def _store(self, key: str, data: bytes, metadata: Mapping[str, str] | None) -> None:
        """Store, or not, as a queued cut says (call with the lock held)."""
        if self._cut_puts:
            stored = self._cut_puts.pop(0)
            if stored:
                self.objects[key] = _Object(bytes(data), dict(metadata or {}))
            raise ArchiveUnavailableError(
                "connection reset during the PUT body", url=self.url, key=key
            )
        self.objects[key] = _Object(bytes(data), dict(metadata or {}))

    def put_if_absent(
        self, key: str, data: bytes, metadata: Mapping[str, str] | None = None
    ) -> bool:
        self._enter("put", key)
        with self._lock:
            if key in self.objects and not self.ignore_conditions:
                return False
            self._store(key, data, metadata)
            return True

    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> None:
        self._enter("put", key)
        with self._lock:
            self._store(key, data, metadata)

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        self._enter("get", key)
        if start < 0 or (end is not None and end < start):
            raise ArchiveError(f"invalid range {start}..{end}", url=self.url, key=key)
        with self._lock:
            found = self.objects.get(key)
            if found is None:
                raise ArchiveNotFoundError("no such object", url=self.url, key=key)
            body = found.data[start:end]
            if self._short_gets and self._short_gets[0][0] < len(body):
                keep, silent = self._short_gets.pop(0)
                if silent:
                    return body[:keep]
                raise ArchiveUnavailableError(
                    f"body ended after {keep} of {len(body)} bytes", url=self.url, key=key
                )
            return body

    def head(self, key: str) -> ObjectInfo | None:
        self._enter("head", key)
        with self._lock:
            found = self.objects.get(key)
            if found is None:
                return None
            return ObjectInfo(key=key, size=len(found.data), metadata=dict(found.metadata))

    def list(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        self._enter("list", prefix)
        with self._lock:
            keys = sorted(k for k in self.objects if k.startswith(prefix) and k > start_after)
            if self._hide_newest and keys:
                self._hide_newest -= 1
                keys.pop()
            found = [ObjectInfo(key=k, size=len(self.objects[k].data)) for k in keys]
        return iter(found)

    def delete(self, key: str) -> None:
        self._enter("delete", key)
        with self._lock:
            self.objects.pop(key, None)

    def close(self) -> None:
        self.closed = True
