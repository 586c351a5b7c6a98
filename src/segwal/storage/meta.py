"""The ``META`` file: the log's persisted first LSN (checkpoint), holds, and an unfinished
``truncate_after``.

Layout (little-endian)::

    0   8  magic      b"SWMETA01"
    8   4  length     of the JSON body
    12  4  CRC32C     of the JSON body
    16  n  body       UTF-8 JSON: {"first_lsn": int, "holds": {name: lsn},
                                   "truncate_after": int | null}

It is replaced whole: written to ``META.tmp``, fdatasynced, renamed over ``META``, and the
directory fsynced, so a crash leaves the old version or the new one, never a mix.
"""

from __future__ import annotations

import errno
import json
import posixpath
import re
import struct
from dataclasses import dataclass, field, replace
from typing import Final

from segwal.errors import ConfigError, CorruptionError, StorageError
from segwal.format import naming
from segwal.format.layout import MAX_LSN, crc32c
from segwal.storage.fileio import FileSystem

META_NAME: Final = naming.META_NAME
META_TEMP: Final = naming.META_TEMP_NAME
_MAGIC: Final = b"SWMETA01"
_HEAD = struct.Struct("<8sII")
_MAX_BODY: Final = 16 << 20
HOLD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Meta:
    """What the log keeps beside its segments."""

    first_lsn: int = 1
    holds: dict[str, int] = field(default_factory=dict)
    truncate_after: int | None = None  # set while a truncate_after is being carried out

    def with_(self, **changes: object) -> Meta:
        return replace(self, **changes)  # type: ignore[arg-type]


def check_hold_name(name: object) -> str:
    """A hold or cursor name: 1-128 characters of letters, digits and ``._:@-``."""
    if not isinstance(name, str) or not HOLD_NAME.match(name):
        raise ConfigError(
            f"invalid hold name {name!r}: use 1-128 letters, digits or ._:@- "
            "(starting with a letter or digit)",
            option="name",
        )
    return name


def encode(meta: Meta) -> bytes:
    body = json.dumps(
        {"first_lsn": meta.first_lsn, "holds": meta.holds, "truncate_after": meta.truncate_after},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    return _HEAD.pack(_MAGIC, len(body), crc32c(body)) + body


def decode(data: bytes, path: str) -> Meta:
    def bad(reason: str) -> CorruptionError:
        return CorruptionError(f"META file: {reason}", path=path, offset=0)

    if len(data) < _HEAD.size:
        raise bad("too short")
    magic, length, crc = _HEAD.unpack_from(data)
    if magic != _MAGIC:
        raise bad("bad magic")
    if length > _MAX_BODY or _HEAD.size + length != len(data):
        raise bad(f"length {length} disagrees with the file size {len(data)}")
    body = data[_HEAD.size :]
    if crc32c(body) != crc:
        raise bad("checksum mismatch")
    try:
        raw = json.loads(body)
        first = raw["first_lsn"]
        holds = raw["holds"]
        after = raw["truncate_after"]
        valid = (
            isinstance(first, int)
            and 1 <= first <= MAX_LSN + 1
            and isinstance(holds, dict)
            and all(isinstance(k, str) and isinstance(v, int) for k, v in holds.items())
            and (after is None or isinstance(after, int))
        )
    except (ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise bad("unreadable body")
    return Meta(first_lsn=first, holds=dict(holds), truncate_after=after)


def load(fs: FileSystem, directory: str) -> Meta | None:
    """The META of ``directory``, or None when the log has none yet."""
    path = posixpath.join(directory, META_NAME)
    try:
        handle = fs.open_read(path)
    except StorageError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    try:
        size = handle.size()
        if size > _HEAD.size + _MAX_BODY:
            raise CorruptionError("META file is too large", path=path, offset=0)
        return decode(handle.pread(size, 0), path)
    finally:
        handle.close()


def store(fs: FileSystem, directory: str, meta: Meta) -> None:
    """Replace META atomically and durably (temp file, fdatasync, rename, directory fsync)."""
    temp = posixpath.join(directory, META_TEMP)
    try:
        fs.unlink(temp)
    except StorageError as exc:
        if exc.errno != errno.ENOENT:
            raise
    handle = fs.create(temp)
    try:
        handle.pwrite(encode(meta), 0)
        # The new content must be durable before the name points at it.
        handle.sync("meta.sync")
    finally:
        handle.close()
    fs.rename(temp, posixpath.join(directory, META_NAME))
    # The rename is what makes the new first LSN or hold count: it must survive.
    fs.sync_dir(directory, "meta.rename")
