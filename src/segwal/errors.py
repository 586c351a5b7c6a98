"""The exception tree of segwal; every error the library raises on purpose is one of these.

::

    SegwalError
    ├── ConfigError (ValueError)             bad option or argument value
    │   └── ArgumentTypeError (TypeError)    an argument of the wrong type
    ├── InvalidPayloadError (TypeError)      a payload that is not bytes-like
    ├── RecordTooLargeError (ValueError)     a record over max_record_bytes
    ├── NotFoundError (LookupError)          an LSN outside the log
    │   └── ReaderFellBehindError            retention removed what a reader needed
    ├── HoldError                            a truncation would drop records a hold keeps
    ├── LockError                            another process holds the writer lock
    ├── ClosedError                          the log was closed
    ├── ReadOnlyError                        a mutation on a log opened readonly
    ├── WalFailedError                       a write or sync failed earlier; reopen the log
    │   └── ForkedError                      a child forked from the writer tried a change
    ├── StorageError (OSError)               the operating system refused an operation
    │   └── NotRegularFileError              a name segwal opens is a directory, FIFO, ...
    ├── UnsupportedFormatError               a newer format version or an unknown codec
    ├── WrongKeyError                        the key-encryption key does not open KEYS
    ├── MissingKeyError (LookupError)        a log key or a key-encryption key is absent
    └── CorruptionError                      damaged or inconsistent data on disk
        ├── ChecksumError                    a checksum does not match
        ├── SegmentHeaderError               a segment header is invalid or disagrees
        ├── SealError                        a seal footer is missing or invalid
        ├── ContinuityError                  a gap, overlap, broken chain or foreign segment
        ├── AuthenticationError              an encrypted frame with a valid CRC is forged
        └── MissingDictionaryError           a segment names a dictionary the log lacks

Errors carry their context as attributes (``path``, ``offset``, ``lsn``, ``reason``) so
callers never have to parse messages.
"""

from __future__ import annotations

import errno as _errno


class SegwalError(Exception):
    """Base class of every error segwal raises on purpose."""


class ConfigError(SegwalError, ValueError):
    """An option or argument has a value segwal cannot accept."""

    def __init__(self, message: str, *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class ArgumentTypeError(ConfigError, TypeError):
    """An argument has the wrong type (``read("1")``, ``follow(timeout="1")``): a
    ``ConfigError`` and a ``TypeError`` both, so either ``except`` catches it."""


class InvalidPayloadError(SegwalError, TypeError):
    """A payload is not a bytes-like object."""

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class RecordTooLargeError(SegwalError, ValueError):
    """A record is larger than ``max_record_bytes``."""

    def __init__(self, size: int, limit: int, *, index: int | None = None) -> None:
        where = "" if index is None else f" (record {index} of the batch)"
        super().__init__(f"record of {size} bytes exceeds max_record_bytes={limit}{where}")
        self.size = size
        self.limit = limit
        self.index = index


class NotFoundError(SegwalError, LookupError):
    """An LSN is outside the range the log holds."""

    def __init__(self, message: str, *, lsn: int, first_lsn: int, last_lsn: int) -> None:
        super().__init__(message)
        self.lsn = lsn
        self.first_lsn = first_lsn
        self.last_lsn = last_lsn


class ReaderFellBehindError(NotFoundError):
    """Records a reader still needed were removed (retention or a truncation)."""

    def __init__(self, message: str, *, lsn: int, first_lsn: int) -> None:
        super().__init__(message, lsn=lsn, first_lsn=first_lsn, last_lsn=first_lsn - 1)


class HoldError(SegwalError):
    """A truncation would drop records that a hold keeps."""

    def __init__(self, name: str, hold_lsn: int, lsn: int) -> None:
        super().__init__(
            f"cannot truncate before LSN {lsn}: hold {name!r} keeps LSN {hold_lsn} and later; "
            f"release it first"
        )
        self.name = name
        self.hold_lsn = hold_lsn
        self.lsn = lsn


class LockError(SegwalError):
    """Another process holds the writer lock of the directory."""

    def __init__(self, path: str, pid: int | None) -> None:
        holder = f"process {pid}" if pid else "another process"
        super().__init__(f"{path} is locked by {holder}; one writer per log directory")
        self.path = path
        self.pid = pid


class ClosedError(SegwalError):
    """The log was closed; open it again to use it."""


class ReadOnlyError(SegwalError):
    """A mutation was attempted on a log opened with ``readonly=True``."""


class WalFailedError(SegwalError):
    """An earlier write or sync failed; the log refuses mutations until it is reopened."""

    def __init__(self, cause: BaseException | None) -> None:
        super().__init__(
            f"the log failed earlier ({cause!r}) and accepts no more writes; "
            "close it and open it again to recover"
        )
        self.cause = cause


class ForkedError(WalFailedError):
    """A process forked from the log's writer tried to change the log.

    The child inherits the writer lock and the open files; had it appended, parent and
    child would acknowledge the same LSNs at the same offsets. Open the log again in the
    child (after the parent closed it) or keep the writer in one process.
    """

    def __init__(self, pid: int, parent_pid: int) -> None:
        SegwalError.__init__(
            self,
            f"process {pid} was forked from the log's writer (pid {parent_pid}) and may "
            "not change the log; open it in one process only",
        )
        self.cause = None
        self.pid = pid
        self.parent_pid = parent_pid


class StorageError(SegwalError, OSError):
    """The operating system refused an operation on the log's files."""

    def __init__(self, op: str, path: str, cause: OSError) -> None:
        code = cause.errno if cause.errno is not None else _errno.EIO
        OSError.__init__(self, code, f"{op} failed: {cause.strerror or cause}", path)
        self.op = op
        self.path = path
        self.cause = cause


class NotRegularFileError(StorageError):
    """A name segwal opens (a segment, META, LOCK, a cursor or index file) is not a regular
    file: a directory, a FIFO, a socket or a device. segwal never reads or writes it.

    ``errno`` is ``EISDIR`` for a directory and ``EINVAL`` otherwise; ``file_type`` says
    what it is."""

    def __init__(self, op: str, path: str, file_type: str) -> None:
        code = _errno.EISDIR if file_type == "directory" else _errno.EINVAL
        super().__init__(op, path, OSError(code, f"not a regular file (a {file_type})"))
        self.file_type = file_type


class UnsupportedFormatError(SegwalError):
    """The data needs a newer segwal, or a codec that is not installed."""

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None) -> None:
        super().__init__(message if hint is None else f"{message}; {hint}")
        self.path = path
        self.hint = hint


class WrongKeyError(SegwalError):
    """The key-encryption key given does not unwrap the log keys in ``KEYS``.

    Raised before recovery or anything else acts: a wrong key is never taken for damage,
    and every file stays as it was. ``path`` is the KEYS file, ``key_id`` the log key that
    failed to unwrap."""

    def __init__(self, path: str, key_id: int) -> None:
        super().__init__(
            f"the key-encryption key does not unwrap log key {key_id} of {path}: wrong key "
            "(nothing was changed)"
        )
        self.path = path
        self.key_id = key_id


class MissingKeyError(SegwalError, LookupError):
    """A key the operation needs is absent: the log is encrypted and no key-encryption key
    was given, or a segment names a log key id that ``KEYS`` no longer holds (shredded).

    ``key_id`` is the log key's id when one is named, ``path`` the file that needs it."""

    def __init__(self, message: str, *, path: str | None = None, key_id: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.key_id = key_id


class CorruptionError(SegwalError):
    """Data on disk is damaged or inconsistent; nothing was skipped silently."""

    def __init__(
        self,
        reason: str,
        *,
        path: str | None = None,
        offset: int | None = None,
        lsn: int | None = None,
    ) -> None:
        where = []
        if path is not None:
            where.append(f"in {path}")
        if offset is not None:
            where.append(f"at offset {offset}")
        if lsn is not None:
            where.append(f"(expected LSN {lsn})")
        super().__init__(" ".join([reason, *where]))
        self.reason = reason
        self.path = path
        self.offset = offset
        self.lsn = lsn


class ChecksumError(CorruptionError):
    """A checksum over a header, frame or seal does not match its bytes."""


class SegmentHeaderError(CorruptionError):
    """A segment header is unreadable or disagrees with its file name or log."""


class SealError(CorruptionError):
    """A sealed segment's footer is missing, invalid or disagrees with its contents."""


class ContinuityError(CorruptionError):
    """Segments do not form one chain: a gap, an overlap, a broken digest or a foreign log."""


class AuthenticationError(CorruptionError):
    """An encrypted frame whose checksum is valid does not authenticate: its bytes, its place
    or its head were changed, or it was encrypted under another key. Never a torn write."""


class MissingDictionaryError(CorruptionError):
    """A segment names a compression dictionary (by the id in its header) that the log
    directory does not hold: ``path`` is the segment that needs it. Raised before anything
    is changed; the frames are intact (their CRCs cover the stored bytes)."""


class ArchiveError(SegwalError):
    """The archive (an object store holding sealed segments) refused or failed an operation.

    ``url`` names the archive, ``key`` the object when one is involved."""

    def __init__(self, message: str, *, url: str | None = None, key: str | None = None) -> None:
        where = [f"object {key}"] if key is not None else []
        if url is not None:
            where.append(f"in {url}")
        super().__init__(" ".join([message, *where]) if where else message)
        self.url = url
        self.key = key


class ArchiveUnavailableError(ArchiveError):
    """The store did not answer usefully (5xx, SlowDown, a cut connection, a timeout).

    Transient: the caller retries with backoff. ``status`` is the HTTP status when known."""

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        key: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message, url=url, key=key)
        self.status = status


class ArchiveAccessError(ArchiveError):
    """The store refused us for good: no credentials, expired or wrong credentials, no such
    bucket, no permission, or a store that ignores conditional writes. Retrying will not help."""


class ArchiveNotFoundError(ArchiveError, LookupError):
    """An object the archive should hold is missing."""


class ArchiveConflictError(ArchiveError):
    """Two different contents claim one archive position (an object exists with other bytes),
    or the prefix belongs to another log. Uploading stops; local data is kept."""


class ArchiveCorruptError(ArchiveError):
    """An archived object is damaged, missing from the chain or does not match its seal or
    metadata. ``first_lsn``/``last_lsn`` give the LSN range concerned (when known) and
    ``reason`` says what is wrong."""

    def __init__(
        self,
        reason: str,
        *,
        url: str | None = None,
        key: str | None = None,
        first_lsn: int | None = None,
        last_lsn: int | None = None,
    ) -> None:
        span = f" (LSNs {first_lsn}..{last_lsn})" if first_lsn is not None else ""
        super().__init__(f"{reason}{span}", url=url, key=key)
        self.reason = reason
        self.first_lsn = first_lsn
        self.last_lsn = last_lsn


class ArchiveDivergedError(ArchiveError):
    """A mirror can no longer follow the archive: it was pruned past the mirror's position
    or a newer generation rewrote LSNs the mirror already holds. ``lsn`` is the mirror's
    next LSN."""

    def __init__(self, message: str, *, url: str | None = None, lsn: int | None = None) -> None:
        super().__init__(message, url=url)
        self.lsn = lsn


class RestoreTargetError(SegwalError):
    """A restore or mirror target cannot be used (not empty, not a directory, or holding an
    unfinished restore with other parameters); nothing was written to it. ``path`` names it."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(f"{message}: {path}")
        self.path = path
