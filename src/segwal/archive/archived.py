"""A log opened with ``archive=``: the Wal plus its uploader.

``ArchivedWal`` is a ``Wal`` whose sealed segments go to an object store in the background
(:mod:`segwal.archive.uploader`). It adds ``archive_status()`` and ``wait_archived()``,
stops the uploader around ``truncate_after`` (a rewind below what may be in the store starts
a new generation), and bounds how long ``close()`` waits for an upload in progress.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from segwal.archive.store import ObjectStore
from segwal.archive.uploader import ArchiveStatus, Uploader
from segwal.archive.urls import open_store
from segwal.errors import ClosedError, ConfigError
from segwal.log.config import WalConfig
from segwal.log.plans import TruncateResult
from segwal.log.wal import Wal

DEFAULT_MAX_SEGMENT_AGE: Final = 60.0
DEFAULT_CLOSE_TIMEOUT: Final = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchiveOptions:
    """How a log opened with ``archive=`` uploads (the ``archive_*`` options of open)."""

    max_segment_age: float = DEFAULT_MAX_SEGMENT_AGE  # the archive's recovery point
    poll_interval: float = 1.0  # how often the uploader looks besides seal events
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT  # at most this long close() waits on it
    base_delay: float = 0.2  # the first backoff after a failed request; doubles
    max_delay: float = 30.0
    probe: bool = True  # check the store at open (a few requests)

    def __post_init__(self) -> None:
        for name in ("max_segment_age", "poll_interval", "base_delay", "max_delay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(
                    f"archive_{name} must be a positive number of seconds", option=name
                )
        if not isinstance(self.close_timeout, int | float) or self.close_timeout < 0:
            raise ConfigError(
                "archive_close_timeout must be a number of seconds >= 0", option="close_timeout"
            )


def resolve_store(
    archive: str | ObjectStore, options: dict[str, object] | None = None
) -> ObjectStore:
    """The store an ``archive=`` value names: a store as is, a URL through ``open_store``."""
    if isinstance(archive, str):
        return open_store(archive, **(options or {}))
    if not isinstance(archive, ObjectStore):
        raise ConfigError("archive must be a URL or an ObjectStore", option="archive")
    return archive


class ArchivedWal(Wal):
    """A ``Wal`` that archives its sealed segments (see the module)."""

    def __init__(
        self,
        path: str,
        config: WalConfig,
        store: ObjectStore,
        options: ArchiveOptions,
        *,
        owns_store: bool = False,
    ) -> None:
        if config.readonly:
            raise ConfigError("archive= needs a writable log", option="archive")
        super().__init__(path, config)
        self._archive_options = options
        self._owns_store = owns_store  # a store opened from a URL is closed with the log
        try:
            uploader = self._uploader = Uploader(
                self,
                store,
                max_segment_age=options.max_segment_age,
                poll_interval=options.poll_interval,
                base_delay=options.base_delay,
                max_delay=options.max_delay,
            )
            if options.probe:
                uploader.probe()
            uploader.start()
        except BaseException:
            super().close()
            raise

    def archive_status(self) -> ArchiveStatus:
        """Archived LSN, lag (segments, bytes, seconds), uploads, retries, the last error."""
        self._check_open()
        return self._uploader.status()

    def wait_archived(self, lsn: int, timeout: float | None = None) -> bool:
        """Wait until every record up to ``lsn`` is in the archive and META records it (so
        local retention may delete it); False when ``timeout`` seconds passed first.
        Records reach the archive when their segment is sealed (by size, by
        ``archive_max_segment_age``, or by ``rotate()``). Raises the error that stopped
        uploading (ArchiveConflictError on a conflict, ArchiveError for anything
        unexpected) instead of waiting on a dead worker."""
        self._check_open()
        return self._uploader.wait(lsn, timeout)

    def _check_open(self) -> None:
        if self.closed:
            raise ClosedError(f"the log {self.path} is closed")

    def truncate_after(self, lsn: int) -> TruncateResult:
        """As ``Wal.truncate_after``; the uploader is held off for the rewind, and a rewind
        below anything that may be in the store starts a new generation."""
        with self._uploader.busy:
            result = super().truncate_after(lsn)
            self._uploader.rewound(lsn)
        return result

    def close(self) -> None:
        """Close the log; an upload in progress gets at most ``archive_close_timeout``
        seconds (it resumes at the next open, idempotently)."""
        if self.closed:
            return
        finished = self._uploader.stop(self._archive_options.close_timeout)
        self._uploader.abandon()  # a worker still running writes nothing from here on
        super().close()
        if finished and self._owns_store:
            self._uploader.store.close()
