"""File-name grammar of a log directory, both ways.

A segment is ``{first_lsn:020d}.wal``, so names sort in LSN order as plain strings. A segment
being created is ``{first_lsn:020d}.wal.tmp`` until its header is durable and it is renamed.
Bytes moved aside by recovery go to ``{name}.{n}.quarantine`` and are never deleted by segwal.
A sealed segment's sparse index may sit beside it as ``{first_lsn:020d}.wal.idx``.
``LOCK`` holds the writer lock and the durable LSN published to live readers; ``META``
holds the checkpoint, holds and an unfinished truncation (``META.tmp`` while it is replaced);
``KEYS`` holds an encrypted log's wrapped log keys (``KEYS.tmp`` while it is replaced);
``{digest hex}.zdict`` is a compression dictionary (``format.dictionary``), named by the BLAKE3
digest of its content and written as ``{digest hex}.zdict.tmp`` first; ``cursor.{name}``
holds a consumer's position (see :mod:`segwal.log.cursors`), written as
``cursor.{name}.{pid}.tmp`` first; such leftovers are temp files like ``META.tmp``.
The archive (``segwal.archive``) keeps ``ARCHIVE.state`` in an archived log, ``MIRROR.state``
in a mirror and ``RESTORE.plan`` in a restore being built, each replaced through
``{name}.{pid}.tmp``: all of kind ``ARCHIVE``, known (not foreign) and never touched by the
log itself (a leftover temp file may belong to a live ``segwal archive push`` beside the
writer, so recovery does not delete it the way it deletes ``META.tmp``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Final

SEGMENT_SUFFIX: Final = ".wal"
TEMP_SUFFIX: Final = ".tmp"
QUARANTINE_SUFFIX: Final = ".quarantine"
LOCK_NAME: Final = "LOCK"
META_NAME: Final = "META"
META_TEMP_NAME: Final = "META.tmp"
KEYS_NAME: Final = "KEYS"
KEYS_TEMP_NAME: Final = "KEYS.tmp"
ARCHIVE_STATE_NAME: Final = "ARCHIVE.state"
MIRROR_STATE_NAME: Final = "MIRROR.state"
RESTORE_PLAN_NAME: Final = "RESTORE.plan"
ARCHIVE_NAMES: Final = frozenset({ARCHIVE_STATE_NAME, MIRROR_STATE_NAME, RESTORE_PLAN_NAME})
CURSOR_PREFIX: Final = "cursor."
LSN_DIGITS: Final = 20

_SEGMENT_LEN: Final = LSN_DIGITS + len(SEGMENT_SUFFIX)
# ASCII digits only, and the whole name (fullmatch: "$" would also accept a final newline).
_TEMP = re.compile(r"(\d{20})\.wal\.tmp", re.ASCII)
_INDEX = re.compile(r"(\d{20})\.wal\.idx", re.ASCII)
_QUARANTINE = re.compile(r"(\d{20})\.wal\.(\d+)\.quarantine", re.ASCII)
# cursor.{name}.{pid}.tmp: a cursor commit that never reached its rename.
_ARCHIVE_TEMP = re.compile(r"(?:ARCHIVE\.state|MIRROR\.state|RESTORE\.plan)\.\d+\.tmp", re.ASCII)
_DICT = re.compile(r"[0-9a-f]{64}\.zdict", re.ASCII)
_DICT_TEMP = re.compile(r"[0-9a-f]{64}\.zdict\.tmp", re.ASCII)
_CURSOR_TEMP = re.compile(r"cursor\.[A-Za-z0-9][A-Za-z0-9._:@-]*\.\d+\.tmp", re.ASCII)


class Kind(Enum):
    """What a directory entry is to segwal."""

    SEGMENT = "segment"
    TEMP = "temp"
    QUARANTINE = "quarantine"
    CURSOR = "cursor"
    INDEX = "index"
    LOCK = "lock"
    META = "meta"
    KEYS = "keys"
    DICTIONARY = "dictionary"
    ARCHIVE = "archive"  # the archive's own files (see the module); the log ignores them
    FOREIGN = "foreign"


@dataclass(frozen=True, slots=True)
class Name:
    """A parsed directory entry name."""

    kind: Kind
    name: str
    first_lsn: int = 0


def segment_name(first_lsn: int) -> str:
    """The file name of the segment whose first record is ``first_lsn``."""
    return f"{first_lsn:0{LSN_DIGITS}d}{SEGMENT_SUFFIX}"


def temp_name(first_lsn: int) -> str:
    """The name a segment has while its header is being made durable."""
    return segment_name(first_lsn) + TEMP_SUFFIX


def quarantine_name(segment: str, n: int) -> str:
    """The name for the ``n``-th piece moved aside from ``segment``."""
    return f"{segment}.{n}{QUARANTINE_SUFFIX}"


def _is_lsn(digits: str) -> bool:
    # ASCII only: str.isdigit alone also accepts digits of other scripts.
    return digits.isascii() and digits.isdigit()


def parse(name: str) -> Name:
    """Classify one directory entry by its name alone."""
    if name == LOCK_NAME:
        return Name(Kind.LOCK, name)
    if name == META_NAME:
        return Name(Kind.META, name)
    if name == KEYS_NAME:
        return Name(Kind.KEYS, name)
    if name in (META_TEMP_NAME, KEYS_TEMP_NAME):
        return Name(Kind.TEMP, name)
    if name in ARCHIVE_NAMES or (name.endswith(TEMP_SUFFIX) and _ARCHIVE_TEMP.fullmatch(name)):
        return Name(Kind.ARCHIVE, name)
    if name.startswith(CURSOR_PREFIX):
        if name.endswith(TEMP_SUFFIX) and _CURSOR_TEMP.fullmatch(name):
            return Name(Kind.TEMP, name)
        return Name(Kind.CURSOR, name)
    # Segments are most of a directory: recognise them without the regular expression.
    digits = name[:LSN_DIGITS]
    if len(name) == _SEGMENT_LEN and name.endswith(SEGMENT_SUFFIX) and _is_lsn(digits):
        return Name(Kind.SEGMENT, name, int(digits))
    if m := _TEMP.fullmatch(name):
        return Name(Kind.TEMP, name, int(m.group(1)))
    if m := _INDEX.fullmatch(name):
        return Name(Kind.INDEX, name, int(m.group(1)))
    if m := _QUARANTINE.fullmatch(name):
        return Name(Kind.QUARANTINE, name, int(m.group(1)))
    if _DICT.fullmatch(name):
        return Name(Kind.DICTIONARY, name)
    if _DICT_TEMP.fullmatch(name):
        return Name(Kind.TEMP, name)
    return Name(Kind.FOREIGN, name)
