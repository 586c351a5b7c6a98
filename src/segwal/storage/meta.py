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
_CURSOR = struct.Struct("<8sQ")
CURSOR_MAGIC: Final = b"SWCUR001"
CURSOR_SIZE: Final = _CURSOR.size + 4
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
    except ValueError:  # not UTF-8, not JSON, or an integer too long to convert
        raise bad("unreadable body") from None
    problem = _field_problem(raw)
    if problem is not None:
        # A checksum only says the bytes are the ones written; a hand edit or a bug can
        # write a valid checksum over values that would make recovery delete segments.
        raise bad(problem)
    return Meta(
        first_lsn=raw["first_lsn"], holds=dict(raw["holds"]), truncate_after=raw["truncate_after"]
    )


def _is_lsn(value: object, low: int, high: int) -> bool:
    # bool is an int subclass: true and false are not LSNs.
    return type(value) is int and low <= value <= high


def _field_problem(raw: object) -> str | None:
    """Why a decoded META body is not one segwal could have written, if it is not."""
    if not isinstance(raw, dict):
        return "body is not a JSON object"
    missing = [key for key in ("first_lsn", "holds", "truncate_after") if key not in raw]
    if missing:
        return f"body lacks {', '.join(missing)}"
    first, holds, after = raw["first_lsn"], raw["holds"], raw["truncate_after"]
    if not _is_lsn(first, 1, MAX_LSN + 1):
        return f"first_lsn {first!r} is not an LSN between 1 and {MAX_LSN + 1}"
    if not isinstance(holds, dict):
        return f"holds {holds!r} is not an object"
    for name, lsn in holds.items():
        if not HOLD_NAME.match(name):
            return f"hold name {name!r} is not a valid name"
        if not _is_lsn(lsn, 1, MAX_LSN + 1):
            return f"hold {name!r} at {lsn!r} is not an LSN between 1 and {MAX_LSN + 1}"
    if after is not None and not _is_lsn(after, first - 1, MAX_LSN):
        return (
            f"truncate_after {after!r} is neither null nor an LSN between {first - 1} "
            f"(first_lsn - 1) and {MAX_LSN}"
        )
    return None


def decode_cursor(raw: bytes, path: str) -> int:
    """The position in a cursor file's bytes (see :mod:`segwal.log.cursors` for the
    layout); CorruptionError when they are damaged or out of range."""
    if len(raw) != _CURSOR.size + 4 or crc32c(raw[: _CURSOR.size]) != int.from_bytes(
        raw[_CURSOR.size :], "little"
    ):
        raise CorruptionError("cursor file is damaged", path=path, offset=0)
    magic, position = _CURSOR.unpack_from(raw)
    if magic != CURSOR_MAGIC or not 1 <= position <= MAX_LSN + 1:
        raise CorruptionError("not a segwal cursor file", path=path, offset=0)
    return int(position)


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
