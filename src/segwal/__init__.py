"""segwal: a segmented write-ahead log.

An append acknowledged as durable is never lost, whatever instant the process or the
machine dies; a batch is all-or-nothing; reopening after a crash yields a consistent prefix,
a torn tail is cut and reported, and corruption anywhere else is raised, never skipped.

    import segwal
    with segwal.open("/var/lib/app/wal") as wal:
        lsn = wal.append(b"change")          # durable when it returns (sync="always")
        for record in wal.replay():
            apply(record.payload)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from os import PathLike

from segwal import events
from segwal.errors import (
    ArgumentTypeError,
    ChecksumError,
    ClosedError,
    ConfigError,
    ContinuityError,
    CorruptionError,
    ForkedError,
    HoldError,
    InvalidPayloadError,
    LockError,
    MissingKeyError,
    NotFoundError,
    NotRegularFileError,
    ReaderFellBehindError,
    ReadOnlyError,
    RecordTooLargeError,
    SealError,
    SegmentHeaderError,
    SegwalError,
    StorageError,
    UnsupportedFormatError,
    WalFailedError,
    WrongKeyError,
)
from segwal.format.records import IMPLEMENTATION as DECODER
from segwal.log import keyadmin
from segwal.log.config import Compression, RecoveryMode, SyncMode, WalConfig
from segwal.log.cursors import Cursor
from segwal.log.encryption import (
    Encryption,
    EnvKey,
    KeyCallback,
    KeyFile,
    KeyProvider,
    RawKey,
    encryption_option,
    unlock,
)
from segwal.log.plans import (
    Deletion,
    RetentionResult,
    SegmentAction,
    TruncatePlan,
    TruncateResult,
)
from segwal.log.retention import Decision
from segwal.log.wal import Wal
from segwal.storage.coding import Coding
from segwal.storage.fileio import FileSystem, OsFileSystem
from segwal.storage.verify import verify_directory
from segwal.types import (
    Batch,
    Cut,
    KeyInfo,
    Problem,
    Record,
    RecoveryReport,
    SegmentCheck,
    SegmentInfo,
    Stats,
    VerifyReport,
)

__version__ = "0.1.0"

__all__ = [
    "DECODER",
    "ArgumentTypeError",
    "Batch",
    "ChecksumError",
    "ClosedError",
    "Compression",
    "ConfigError",
    "ContinuityError",
    "CorruptionError",
    "Cursor",
    "Cut",
    "Decision",
    "Deletion",
    "Encryption",
    "EnvKey",
    "FileSystem",
    "ForkedError",
    "HoldError",
    "InvalidPayloadError",
    "KeyCallback",
    "KeyFile",
    "KeyInfo",
    "KeyProvider",
    "LockError",
    "MissingKeyError",
    "NotFoundError",
    "NotRegularFileError",
    "OsFileSystem",
    "Problem",
    "RawKey",
    "ReadOnlyError",
    "ReaderFellBehindError",
    "Record",
    "RecordTooLargeError",
    "RecoveryMode",
    "RecoveryReport",
    "RetentionResult",
    "SealError",
    "SegmentAction",
    "SegmentCheck",
    "SegmentHeaderError",
    "SegmentInfo",
    "SegwalError",
    "Stats",
    "StorageError",
    "SyncMode",
    "TruncatePlan",
    "TruncateResult",
    "UnsupportedFormatError",
    "VerifyReport",
    "Wal",
    "WalConfig",
    "WalFailedError",
    "WrongKeyError",
    "__version__",
    "delete_keys",
    "events",
    "list_keys",
    "open",
    "rotate_keys",
    "verify",
]


def open(  # the natural name, as lmdb.open and shelve.open
    path: str | bytes | PathLike[str] | PathLike[bytes],
    *,
    segment_bytes: int = 64 * 2**20,
    max_segment_age: float | None = None,
    sync: SyncMode = "always",
    sync_interval: float = 0.05,
    buffer_bytes: int = 0,
    max_record_bytes: int = 16 * 2**20,
    recovery: RecoveryMode = "tolerate_tail",
    readonly: bool = False,
    retention_max_age: float | None = None,
    retention_max_bytes: int | None = None,
    retention_min_segments: int = 0,
    filesystem: FileSystem | None = None,
    clock: Callable[[], int] | None = None,
    slow_fsync_seconds: float = 1.0,
    observers: Iterable[events.Observer] = (),
    compression: Compression | None = None,
    compression_level: int | None = None,
    encryption_key: bytes | None = None,
    encryption: bytes | KeyProvider | Encryption | None = None,
) -> Wal:
    """Open (or create) the log in directory ``path``, recovering it after a crash.

    ``encryption_key`` (32 bytes) is the key-encryption key of an encrypted log, the short
    form of ``encryption=`` (a key provider such as ``KeyFile``, or ``Encryption`` for the
    cipher too); see docs/SECURITY.md. See the README for what each option means and its
    default.
    """
    if encryption_key is not None:
        if encryption is not None:
            raise ConfigError(
                "give encryption_key or encryption, not both", option="encryption_key"
            )
        encryption = RawKey(encryption_key)
    options: dict[str, object] = {}
    if filesystem is not None:
        options["filesystem"] = filesystem
    if clock is not None:
        options["clock"] = clock
    config = WalConfig(
        segment_bytes=segment_bytes,
        max_segment_age=max_segment_age,
        sync=sync,
        sync_interval=sync_interval,
        buffer_bytes=buffer_bytes,
        max_record_bytes=max_record_bytes,
        recovery=recovery,
        readonly=readonly,
        retention_max_age=retention_max_age,
        retention_max_bytes=retention_max_bytes,
        retention_min_segments=retention_min_segments,
        slow_fsync_seconds=slow_fsync_seconds,
        observers=tuple(observers),
        compression=compression,
        compression_level=compression_level,
        encryption=encryption,  # type: ignore[arg-type]  # WalConfig turns it into Encryption
        **options,  # type: ignore[arg-type]
    )
    return Wal(_directory(path, resolve=filesystem is None), config)


def verify(
    path: str | bytes | PathLike[str] | PathLike[bytes],
    *,
    filesystem: FileSystem | None = None,
    encryption_key: bytes | None = None,
    encryption: bytes | KeyProvider | Encryption | None = None,
) -> VerifyReport:
    """Read every byte of the log in ``path`` and report problems; never writes.

    Checksums, seals and the chain need no key; with the log's key-encryption key
    (``encryption_key`` or ``encryption``, as for :func:`open`) every encrypted frame is
    authenticated too. A wrong key raises ``WrongKeyError``."""
    directory = _directory(path, resolve=filesystem is None)
    fs = filesystem or OsFileSystem()
    if encryption_key is not None:
        encryption = RawKey(encryption_key)
    options = encryption_option(encryption)
    ring = None if options is None else unlock(fs, directory, options, writing=False).ring
    return verify_directory(fs, directory, Coding(None, ring))


def list_keys(
    path: str | bytes | PathLike[str] | PathLike[bytes], *, filesystem: FileSystem | None = None
) -> tuple[KeyInfo, ...]:
    """The log keys of the encrypted log in ``path`` (ids, ciphers, which is current); needs
    no key. MissingKeyError when the log is not encrypted."""
    fs = filesystem or OsFileSystem()
    return keyadmin.list_keys(fs, _directory(path, resolve=filesystem is None))


def rotate_keys(
    path: str | bytes | PathLike[str] | PathLike[bytes],
    kek: bytes | KeyProvider,
    *,
    new_kek: bytes | KeyProvider | None = None,
    new_log_key: bool = False,
    cipher: str | None = None,
    filesystem: FileSystem | None = None,
) -> tuple[KeyInfo, ...]:
    """Rewrap the log keys of the (closed) log in ``path`` under ``new_kek``, and/or give new
    segments a new log key (``cipher``: its cipher). No segment is touched; KEYS is replaced
    atomically. WrongKeyError for a wrong ``kek``, LockError while a writer has the log."""
    fs = filesystem or OsFileSystem()
    return keyadmin.rotate_keys(
        fs,
        _directory(path, resolve=filesystem is None),
        _provider(kek),
        new_kek=None if new_kek is None else _provider(new_kek),
        new_log_key=new_log_key,
        cipher=cipher,
        now_us=time.time_ns() // 1000,
    )


def delete_keys(
    path: str | bytes | PathLike[str] | PathLike[bytes],
    key_ids: Iterable[int],
    *,
    filesystem: FileSystem | None = None,
) -> tuple[KeyInfo, ...]:
    """Crypto-shredding: remove log keys from the (closed) log in ``path``. Every segment they
    encrypted becomes unreadable, for good; the current key cannot be deleted."""
    fs = filesystem or OsFileSystem()
    return keyadmin.delete_keys(fs, _directory(path, resolve=filesystem is None), key_ids)


def _provider(value: bytes | KeyProvider) -> KeyProvider:
    if isinstance(value, KeyProvider):
        return value
    return RawKey(value)


def _directory(path: str | bytes | PathLike[str] | PathLike[bytes], *, resolve: bool) -> str:
    """The log's directory as a str, like ``os`` takes it (str, bytes or path-like).

    On the real file system it is made absolute here, once: a later ``os.chdir`` must not
    move where the log's next segment is created.
    """
    try:
        name = os.fsdecode(os.fspath(path))
    except TypeError:
        raise TypeError(
            f"path must be str, bytes or os.PathLike, not {type(path).__name__}"
        ) from None
    if not name or "\0" in name:
        raise ConfigError(f"invalid log path {name!r}", option="path")
    return os.path.abspath(name) if resolve else name
