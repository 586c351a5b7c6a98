"""Options of an open log, validated once, with the defaults documented in the README."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal

from segwal.errors import ArgumentTypeError, ConfigError
from segwal.events import Observer
from segwal.format import codecs
from segwal.format import dictionary as zdict
from segwal.format.cipher import SegmentKeys
from segwal.format.layout import HEADER_SIZE, MAX_U32, SEAL_SIZE
from segwal.log.encryption import Encryption, encryption_option
from segwal.storage.coding import Coding
from segwal.storage.dictionaries import Dictionaries
from segwal.storage.fileio import FileSystem, OsFileSystem

SyncMode = Literal["always", "interval", "never"]
RecoveryMode = Literal["tolerate_tail", "strict", "truncate"]
Compression = Literal["zstd", "lz4"]

SYNC_MODES: Final = ("always", "interval", "never")
RECOVERY_MODES: Final = ("tolerate_tail", "strict", "truncate")
MIN_SEGMENT_BYTES: Final = HEADER_SIZE + SEAL_SIZE + 256
MAX_BUFFER_BYTES: Final = 1 << 30  # what a buffered burst may hold in memory
MAX_COMPRESSION_THREADS: Final = 64
MAX_RECORD_LIMIT: Final = 1 << 30  # a frame's body length must fit in a u32 with room to spare
PREALLOCATE_STEP: Final = 1 << 20  # preallocate=True: space allocated at a time


def _now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class WalConfig:
    """Everything :func:`segwal.open` accepts, checked in one place."""

    segment_bytes: int = 64 * 2**20
    max_segment_age: float | None = None
    sync: SyncMode = "always"
    sync_interval: float = 0.05
    # Single appends gather in memory up to this many payload bytes and reach the file as
    # one batch (0: every append is written at once). Not with sync="always".
    buffer_bytes: int = 0
    max_record_bytes: int = 16 * 2**20
    # Checked frames kept in memory for point reads (log/framecache.py); 0: none.
    read_cache_bytes: int = 32 * 2**20
    recovery: RecoveryMode = "tolerate_tail"
    readonly: bool = False
    retention_max_age: float | None = None
    retention_max_bytes: int | None = None
    retention_min_segments: int = 0
    filesystem: FileSystem = field(default_factory=OsFileSystem)
    clock: Callable[[], int] = _now_us  # microseconds since the epoch; injectable for tests
    # An fdatasync at least this long is logged as a warning (etcd's threshold is 1 s).
    slow_fsync_seconds: float = 1.0
    # Called with every event of segwal.events from the start, recovery's included.
    observers: tuple[Observer, ...] = ()
    # Format version 2: each frame compressed alone when that saves an eighth and 64 bytes
    # ("zstd" or "lz4", level as the codec counts it, None for its default).
    compression: Compression | None = None
    compression_level: int | None = None
    # A trained zstd dictionary (its bytes, or the path of a file holding them or a .zdict
    # file): stored in the log at open, named by the segments created after it (see
    # storage/dictionaries.py). Stored as format.dictionary.Dictionary. Not with encryption:
    # a dictionary holds text of its samples in plaintext (docs/SECURITY.md).
    compression_dictionary: zdict.Dictionary | bytes | str | os.PathLike[str] | None = None
    # Compress batches on this many worker threads instead of the appending thread: an
    # append_batch (or a full buffer_bytes burst) returns once queued (log/pipeline.py).
    # The promise is buffer_bytes's; 0: compress on the appending thread.
    compression_threads: int = 0
    # Encryption at rest: 32 bytes (the key-encryption key), a key provider, or Encryption
    # (provider and cipher); stored as Encryption. None: segments are written in plaintext.
    # At open, the log keys in KEYS are unwrapped (or made) and become the log's key ring.
    encryption: Encryption | None = None
    # A key ring of the caller's own (format/cipher.py's SegmentKeys) instead: no KEYS file;
    # the caller keeps the keys. Not with encryption=.
    keys: SegmentKeys | None = None
    # New segments get their space ahead of the tail (fallocate), in steps of
    # min(segment_bytes, 1 MiB), so a durable append overwrites allocated space and its
    # fdatasync need not journal a size change. Format v2 (a zeroed tail); docs/DURABILITY.md.
    preallocate: bool = False
    # Segment writes bypass the page cache (O_DIRECT) in whole 4 KiB blocks from an aligned
    # buffer, the partial last block rewritten with each append; implies preallocate. A
    # file system that refuses O_DIRECT (tmpfs) makes the open fail: docs/DURABILITY.md.
    direct_io: bool = False

    def __post_init__(self) -> None:
        _int_in("segment_bytes", self.segment_bytes, MIN_SEGMENT_BYTES, 1 << 40)
        _int_in("max_record_bytes", self.max_record_bytes, 1, MAX_RECORD_LIMIT)
        if self.max_segment_age is not None:
            _positive("max_segment_age", self.max_segment_age)
        _positive("sync_interval", self.sync_interval)
        _int_in("buffer_bytes", self.buffer_bytes, 0, MAX_BUFFER_BYTES)
        _int_in("read_cache_bytes", self.read_cache_bytes, 0, 1 << 40)
        if self.buffer_bytes and self.sync == "always":
            raise ConfigError(
                'buffer_bytes needs sync="interval" or "never": with sync="always" every '
                "append is made durable before it returns",
                option="buffer_bytes",
            )
        if self.sync not in SYNC_MODES:
            raise ConfigError(f"sync must be one of {SYNC_MODES}, not {self.sync!r}", option="sync")
        if self.recovery not in RECOVERY_MODES:
            raise ConfigError(
                f"recovery must be one of {RECOVERY_MODES}, not {self.recovery!r}",
                option="recovery",
            )
        if self.retention_max_age is not None:
            _positive("retention_max_age", self.retention_max_age)
        if self.retention_max_bytes is not None:
            _int_in("retention_max_bytes", self.retention_max_bytes, 1, 1 << 62)
        _int_in("retention_min_segments", self.retention_min_segments, 0, 1 << 31)
        _positive("slow_fsync_seconds", self.slow_fsync_seconds)
        if not callable(self.clock):
            raise ArgumentTypeError("clock must be a callable", option="clock")
        self.now_us()  # a clock of seconds or floats is refused here, not deep in an encoder
        if not all(callable(o) for o in self.observers):
            raise ConfigError("observers must be callables", option="observers")
        object.__setattr__(self, "encryption", encryption_option(self.encryption))
        if self.encryption is not None and self.keys is not None:
            raise ConfigError(
                "give encryption= (segwal keeps the keys in KEYS) or keys= (a key ring of "
                "your own), not both",
                option="keys",
            )
        if not isinstance(self.readonly, bool):
            raise ConfigError("readonly must be True or False", option="readonly")
        for name in ("preallocate", "direct_io"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False", option=name)
        _check_compression(self.compression, self.compression_level)
        if self.compression_dictionary is not None:
            object.__setattr__(
                self, "compression_dictionary", _dictionary_option(self.compression_dictionary)
            )
            if self.compression != "zstd":
                raise ConfigError(
                    'compression_dictionary needs compression="zstd"',
                    option="compression_dictionary",
                )
            if self.encryption is not None or self.keys is not None:
                raise ConfigError(
                    "compression_dictionary is refused with encryption: the dictionary holds "
                    "text of its training records and is stored in plaintext",
                    option="compression_dictionary",
                )
            if self.readonly:
                raise ConfigError(
                    "a readonly view adds no dictionary", option="compression_dictionary"
                )
        _int_in("compression_threads", self.compression_threads, 0, MAX_COMPRESSION_THREADS)
        if self.compression_threads and self.compression is None:
            raise ConfigError(
                "compression_threads needs a compression", option="compression_threads"
            )
        if self.compression_threads and self.sync == "always":
            raise ConfigError(
                'compression_threads needs sync="interval" or "never": with sync="always" '
                "every append is durable before it returns, and appending threads already "
                "compress in parallel outside the lock",
                option="compression_threads",
            )
        assert self.max_record_bytes <= MAX_U32

    def now_us(self) -> int:
        """The clock's value, refused with a typed error unless it is integer microseconds:
        headers, seals, key stamps and record timestamps all read the clock through here."""
        now = self.clock()
        if now.__class__ is int:
            return now
        if isinstance(now, bool) or not isinstance(now, int):
            raise ArgumentTypeError(
                f"clock() must return integer microseconds since the epoch, not {now!r}",
                option="clock",
            )
        return int(now)

    @property
    def dictionary(self) -> zdict.Dictionary | None:
        """The checked compression dictionary (``__post_init__`` made it one)."""
        found = self.compression_dictionary
        return found if isinstance(found, zdict.Dictionary) else None

    def coding(self, dictionaries: Dictionaries | None = None) -> Coding:
        """The compressor and key ring of the log's writer; raises UnsupportedFormatError
        with the pip hint when the codec is not installed (at open, not at first append)."""
        packer = None
        if self.compression is not None:
            trained = self.dictionary
            packer = codecs.compressor(
                self.compression,
                self.compression_level,
                None if trained is None else (trained.dict_id, trained.content),
            )
        prealloc = self.preallocate or self.direct_io
        step = min(self.segment_bytes, PREALLOCATE_STEP) if prealloc else 0
        return Coding(
            packer,
            self.keys,
            dictionaries=dictionaries,
            preallocate=step,
            direct=self.direct_io,
        )


def _dictionary_option(value: object) -> zdict.Dictionary:
    """A compression dictionary from its bytes, a file of them or a ``.zdict`` file."""
    if isinstance(value, zdict.Dictionary):
        return value
    where = None
    if isinstance(value, str | os.PathLike):
        where = os.fspath(value)
        try:
            with open(where, "rb") as f:
                value = f.read(zdict.MAX_FILE + 1)
        except OSError as exc:
            raise ConfigError(
                f"compression_dictionary {where}: {exc.strerror or exc}",
                option="compression_dictionary",
            ) from None
    if not isinstance(value, bytes | bytearray | memoryview):
        raise ArgumentTypeError(
            "compression_dictionary must be bytes or a path, not " + type(value).__name__,
            option="compression_dictionary",
        )
    data = bytes(value)
    try:
        if data[: len(zdict.MAGIC)] == zdict.MAGIC:
            return zdict.decode(data, where or "compression_dictionary")
        return zdict.make(data)
    except ValueError as exc:
        raise ConfigError(
            f"compression_dictionary: {exc}", option="compression_dictionary"
        ) from None


def _check_compression(name: object, level: object) -> None:
    if name is not None and not isinstance(name, str):
        raise ArgumentTypeError(
            f"compression must be a str or None, not {type(name).__name__}", option="compression"
        )
    if name is not None and name not in codecs.LEVELS:
        raise ConfigError(
            f"compression must be one of {tuple(codecs.LEVELS)} or None, not {name!r}",
            option="compression",
        )
    if level is None:
        return
    if isinstance(level, bool) or not isinstance(level, int):
        raise ArgumentTypeError(
            f"compression_level must be an integer, not {level!r}", option="compression_level"
        )
    if name is None:
        raise ConfigError("compression_level needs a compression", option="compression_level")
    low, high, _default = codecs.LEVELS[name]
    _int_in("compression_level", level, low, high)


def _int_in(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, not {value!r}", option=name)
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, not {value}", option=name)


def _positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number of seconds, not {value!r}", option=name)
    if not 0 < value < 10**9:
        raise ConfigError(f"{name} must be a positive number of seconds, not {value}", option=name)
