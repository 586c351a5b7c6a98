"""The small object-store protocol the archive is written against.

Every store (S3 through a client tested on Ceph, a local directory for ``file://`` URLs,
and the in-memory one that injects faults for tests) implements exactly this, so archive
logic never sees a client library. Keys are ``/``-separated strings without a leading
slash, relative to the store's prefix.

Errors are typed (``segwal.errors``): ``ArchiveUnavailableError`` for anything worth a
retry (5xx, SlowDown, a cut body, a timeout), ``ArchiveAccessError`` for what retrying
will not fix (credentials, permissions, a missing bucket), ``ArchiveNotFoundError`` for a
missing object. A store never retries by itself beyond what its client does for a single
request; backoff policy belongs to the caller, which counts retries for status and metrics.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object as a listing or a HEAD sees it."""

    key: str
    size: int
    metadata: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class ObjectStore(Protocol):
    """Put-if-absent, put, ranged get, head, list after a key, delete."""

    url: str

    def put_if_absent(
        self, key: str, data: bytes, metadata: Mapping[str, str] | None = None
    ) -> bool:
        """Create ``key`` with ``data`` only if no object has that key (``If-None-Match: *``).

        True when this call created it; False when an object already existed (HTTP 412), in
        which case the caller compares contents. ``metadata`` keys are lower-case ASCII."""
        ...

    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> None:
        """Create or replace ``key`` (only for objects whose overwrite is harmless)."""
        ...

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes ``start..end`` of ``key`` (``end`` exclusive, None = to the end).

        A body shorter than the range asked for (a cut connection) raises
        ``ArchiveUnavailableError``, never returns short."""
        ...

    def head(self, key: str) -> ObjectInfo | None:
        """Size and metadata of ``key``, or None when it does not exist."""
        ...

    def list(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix`` and sorts after ``start_after``, in key
        order (metadata may be empty in a listing)."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; deleting a missing key is not an error."""
        ...

    def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...
