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
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from os import PathLike

from segwal import events
from segwal.archive.archived import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_MAX_SEGMENT_AGE,
    ArchivedWal,
    ArchiveOptions,
    resolve_store,
)
from segwal.archive.catalog import ArchiveProblem, ArchiveReport, Listing, read_listing
from segwal.archive.catalog import verify_archive as check_archive
from segwal.archive.mirror import DEFAULT_POLL_INTERVAL, MirrorResult
from segwal.archive.mirror import mirror as mirror_archive
from segwal.archive.operations import local_status
from segwal.archive.operations import push as push_log
from segwal.archive.restore import RestoreResult
from segwal.archive.restore import restore as restore_archive
from segwal.archive.retention import PruneResult
from segwal.archive.retention import prune_archive as prune_store
from segwal.archive.store import ObjectInfo, ObjectStore
from segwal.archive.uploader import ArchiveStatus
from segwal.errors import (
    ArchiveAccessError,
    ArchiveConflictError,
    ArchiveCorruptError,
    ArchiveDivergedError,
    ArchiveError,
    ArchiveNotFoundError,
    ArchiveUnavailableError,
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
    MissingDictionaryError,
    MissingKeyError,
    NotFoundError,
    NotRegularFileError,
    ReaderFellBehindError,
    ReadOnlyError,
    RecordTooLargeError,
    RestoreTargetError,
    SealError,
    SegmentHeaderError,
    SegwalError,
    StorageError,
    UnsupportedFormatError,
    WalFailedError,
    WrongKeyError,
)
from segwal.format.codecs import train_dictionary as train
from segwal.format.dictionary import make as make_dictionary
from segwal.format.encoder import IMPLEMENTATION as ENCODER
from segwal.format.records import IMPLEMENTATION as DECODER
from segwal.log import dictadmin, keyadmin
from segwal.log.config import Compression, RecoveryMode, SyncMode, WalConfig
from segwal.log.cursors import Cursor
from segwal.log.dictadmin import DictionaryInfo
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
    FrameRecords,
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
    "ENCODER",
    "ArchiveAccessError",
    "ArchiveConflictError",
    "ArchiveCorruptError",
    "ArchiveDivergedError",
    "ArchiveError",
    "ArchiveNotFoundError",
    "ArchiveProblem",
    "ArchiveReport",
    "ArchiveStatus",
    "ArchiveUnavailableError",
    "ArchivedWal",
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
    "DictionaryInfo",
    "Encryption",
    "EnvKey",
    "FileSystem",
    "ForkedError",
    "FrameRecords",
    "HoldError",
    "InvalidPayloadError",
    "KeyCallback",
    "KeyFile",
    "KeyInfo",
    "KeyProvider",
    "Listing",
    "LockError",
    "MirrorResult",
    "MissingDictionaryError",
    "MissingKeyError",
    "NotFoundError",
    "NotRegularFileError",
    "ObjectInfo",
    "ObjectStore",
    "OsFileSystem",
    "Problem",
    "PruneResult",
    "RawKey",
    "ReadOnlyError",
    "ReaderFellBehindError",
    "Record",
    "RecordTooLargeError",
    "RecoveryMode",
    "RecoveryReport",
    "RestoreResult",
    "RestoreTargetError",
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
    "archive_status",
    "delete_keys",
    "events",
    "list_archive",
    "list_dictionaries",
    "list_keys",
    "mirror",
    "open",
    "prune_archive",
    "prune_dictionaries",
    "push",
    "restore",
    "rotate_keys",
    "train_dictionary",
    "verify",
    "verify_archive",
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
    read_cache_bytes: int = 32 * 2**20,
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
    compression_dictionary: bytes | str | PathLike[str] | None = None,
    compression_threads: int = 0,
    encryption_key: bytes | None = None,
    encryption: bytes | KeyProvider | Encryption | None = None,
    archive: str | ObjectStore | None = None,
    archive_options: Mapping[str, object] | None = None,
    archive_max_segment_age: float = DEFAULT_MAX_SEGMENT_AGE,
    archive_close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    archive_poll_interval: float = 1.0,
    archive_probe: bool = True,
    preallocate: bool = False,
    direct_io: bool = False,
) -> Wal:
    """Open (or create) the log in directory ``path``, recovering it after a crash.

    ``encryption_key`` (32 bytes) is the key-encryption key of an encrypted log, the short
    form of ``encryption=`` (a key provider such as ``KeyFile``, or ``Encryption`` for the
    cipher too); see docs/SECURITY.md.

    With ``archive`` (a URL such as ``s3://bucket/prefix`` or ``file:///dir``, or an
    ObjectStore) sealed segments are uploaded in the background and the result is an
    :class:`ArchivedWal` (``archive_status()``, ``wait_archived()``); ``archive_options``
    go to the store (endpoint, credentials, ...). Unless ``max_segment_age`` is given, a
    segment is sealed ``archive_max_segment_age`` seconds after its first record, which
    bounds what a lost machine loses from the archive. See docs/ARCHIVE.md.

    See the README for what each option means and its default.
    """
    if encryption_key is not None:
        if encryption is not None:
            raise ConfigError(
                "give encryption_key or encryption, not both", option="encryption_key"
            )
        encryption = RawKey(encryption_key)
    options: dict[str, object] = {}
    if archive is not None and max_segment_age is None:
        max_segment_age = archive_max_segment_age
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
        read_cache_bytes=read_cache_bytes,
        recovery=recovery,
        readonly=readonly,
        retention_max_age=retention_max_age,
        retention_max_bytes=retention_max_bytes,
        retention_min_segments=retention_min_segments,
        slow_fsync_seconds=slow_fsync_seconds,
        observers=tuple(observers),
        compression=compression,
        compression_level=compression_level,
        compression_dictionary=compression_dictionary,
        compression_threads=compression_threads,
        encryption=encryption,  # type: ignore[arg-type]  # WalConfig turns it into Encryption
        preallocate=preallocate,
        direct_io=direct_io,
        **options,  # type: ignore[arg-type]
    )
    directory = _directory(path, resolve=filesystem is None)
    if archive is None:
        return Wal(directory, config)
    uploads = ArchiveOptions(
        max_segment_age=archive_max_segment_age,
        close_timeout=archive_close_timeout,
        poll_interval=archive_poll_interval,
        probe=archive_probe,
    )
    store = resolve_store(archive, dict(archive_options or {}))
    return ArchivedWal(directory, config, store, uploads, owns_store=isinstance(archive, str))


def restore(
    archive: str | ObjectStore,
    path: str | PathLike[str],
    *,
    to_lsn: int | None = None,
    to_time: datetime | float | None = None,
    generation: str | None = None,
    archive_options: Mapping[str, object] | None = None,
    parallel: int = 4,
    progress: Callable[[int, int, int], None] | None = None,
    encryption_key: bytes | None = None,
    encryption: bytes | KeyProvider | Encryption | None = None,
) -> RestoreResult:
    """Rebuild a log from the archive ``archive`` (a URL or an ObjectStore) in ``path``,
    which must not exist or be empty: to the newest archived record, to ``to_lsn``, or to
    ``to_time`` (a datetime or seconds since the epoch: the records appended at or before
    it). ``generation`` picks a generation; the default is the newest holding the point.
    Every object is checked; an interrupted restore resumes when run again with the same
    arguments. ``progress(segments_done, segments_total, bytes_done)`` is called as it goes.

    An encrypted log's wrapped keys come from the archive and are written as ``KEYS``: the
    result opens with the key-encryption key alone. Restoring needs no key, except for a
    cut inside a segment (``encryption_key``/``encryption``, as for ``open``).
    """
    if encryption_key is not None:
        if encryption is not None:
            raise ConfigError(
                "give encryption_key or encryption, not both", option="encryption_key"
            )
        encryption = RawKey(encryption_key)
    store = resolve_store(archive, dict(archive_options or {}))
    try:
        return restore_archive(
            store,
            _directory(path, resolve=True),
            to_lsn=to_lsn,
            to_time_us=_time_us(to_time),
            generation=generation,
            parallel=parallel,
            progress=progress,
            encryption=encryption,
        )
    finally:
        if isinstance(archive, str):
            store.close()


def mirror(
    archive: str | ObjectStore,
    path: str | PathLike[str],
    *,
    follow: bool = False,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    archive_options: Mapping[str, object] | None = None,
    stop: Callable[[], bool] | None = None,
    on_update: Callable[[MirrorResult], None] | None = None,
) -> MirrorResult:
    """Keep a local read-only copy of an archived log in ``path`` (created when missing or
    empty): every verified sealed segment, in order, so ``open(path, readonly=True)``,
    ``replay``, ``follow`` and cursors work on another machine. One pass, or with
    ``follow`` one LIST every ``poll_interval`` seconds until ``stop()`` returns true.
    Raises ArchiveDivergedError when the archive was pruned past the copy or a newer
    generation rewrote records it holds."""
    store = resolve_store(archive, dict(archive_options or {}))
    try:
        return mirror_archive(
            store,
            _directory(path, resolve=True),
            follow=follow,
            poll_interval=poll_interval,
            stop=stop or (lambda: False),
            on_update=on_update,
        )
    finally:
        if isinstance(archive, str):
            store.close()


def push(
    path: str | PathLike[str],
    archive: str | ObjectStore,
    *,
    archive_options: Mapping[str, object] | None = None,
) -> ArchiveStatus:
    """Upload the sealed segments of the log in ``path`` that are not archived yet, once.
    It opens the log readonly (a live writer may keep writing) and keeps its place in the
    consumer cursor ``archive``, which holds retention until segments are archived."""
    store = resolve_store(archive, dict(archive_options or {}))
    try:
        return push_log(_directory(path, resolve=True), store)
    finally:
        if isinstance(archive, str):
            store.close()


def archive_status(path: str | PathLike[str]) -> ArchiveStatus:
    """The archive status the log directory ``path`` records (no request to the store)."""
    return local_status(_directory(path, resolve=True))


def list_archive(
    archive: str | ObjectStore, *, archive_options: Mapping[str, object] | None = None
) -> Listing:
    """The generations and segment objects of an archive (one LIST, a GET per generation)."""
    store = resolve_store(archive, dict(archive_options or {}))
    try:
        return read_listing(store)
    finally:
        if isinstance(archive, str):
            store.close()


def verify_archive(
    archive: str | ObjectStore,
    *,
    archive_options: Mapping[str, object] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ArchiveReport:
    """Read and check every object of an archive; problems are named (object, LSN range,
    reason), never raised."""
    store = resolve_store(archive, dict(archive_options or {}))
    try:
        return check_archive(store, progress=progress)
    finally:
        if isinstance(archive, str):
            store.close()


def prune_archive(
    archive: str | ObjectStore,
    *,
    max_age: float | None = None,
    max_bytes: int | None = None,
    delay: float = 3600.0,
    archive_options: Mapping[str, object] | None = None,
) -> PruneResult:
    """Archive retention in two phases: delete what earlier runs planned once their
    ``delay`` (seconds) has passed, then plan the oldest segments of the newest
    generation's history older than ``max_age`` seconds or beyond ``max_bytes`` (never the
    newest segment) in a manifest. See docs/ARCHIVE.md."""
    store = resolve_store(archive, dict(archive_options or {}))
    try:
        return prune_store(store, max_age=max_age, max_bytes=max_bytes, delay=delay)
    finally:
        if isinstance(archive, str):
            store.close()


def _time_us(value: datetime | float | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ConfigError("to_time needs a timezone (use UTC)", option="to_time")
        return int(value.timestamp() * 1_000_000)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ArgumentTypeError("to_time must be a datetime or seconds", option="to_time")
    return int(value * 1_000_000)


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


def train_dictionary(samples: Iterable[bytes], size: int = 16384) -> bytes:
    """A zstd compression dictionary of at most ``size`` bytes trained on ``samples``
    (records like those it will compress: a few hundred or more), for
    ``open(..., compression="zstd", compression_dictionary=...)``. It helps single small
    records (one record a frame); batches of dozens of records gain nothing from it.
    ValueError when zstd cannot train one from these samples."""
    if isinstance(size, bool) or not isinstance(size, int) or not 256 <= size <= 1 << 20:
        raise ConfigError(f"size must be 256..{1 << 20} bytes, not {size!r}", option="size")
    data = [bytes(s) for s in samples]
    if not data:
        raise ConfigError("no samples to train a dictionary on", option="samples")
    content = train(data, size)
    make_dictionary(content)  # refuses what a log could not store (an id of 0)
    return content


def list_dictionaries(
    path: str | bytes | PathLike[str] | PathLike[bytes], *, filesystem: FileSystem | None = None
) -> tuple[DictionaryInfo, ...]:
    """The compression dictionaries stored in the log in ``path``, each checked whole, with
    the segments whose header names it."""
    fs = filesystem or OsFileSystem()
    return dictadmin.list_dictionaries(fs, _directory(path, resolve=filesystem is None))


def prune_dictionaries(
    path: str | bytes | PathLike[str] | PathLike[bytes],
    *,
    keep: Iterable[bytes] = (),
    dry_run: bool = False,
    filesystem: FileSystem | None = None,
) -> tuple[str, ...]:
    """Delete the dictionary files of the (closed) log in ``path`` that no segment names,
    except those in ``keep`` (dictionary bytes); returns their paths. Never deletes one a
    segment names. LockError while a writer has the log."""
    fs = filesystem or OsFileSystem()
    directory = _directory(path, resolve=filesystem is None)
    return dictadmin.prune_dictionaries(fs, directory, keep=keep, dry_run=dry_run)


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
