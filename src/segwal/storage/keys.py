"""Reading and replacing the ``KEYS`` file; its bytes are ``format.keys``'s.

Replaced whole through ``storage.replace`` like META (temp file, fdatasync, rename,
directory fsync): a crash leaves the old key set or the new one, never a mix, so a rotation
cut short never costs a key. A new log's KEYS is durable before its first encrypted segment
exists, or a crash could leave segments that no key opens.
"""

from __future__ import annotations

import posixpath
from typing import Final

from segwal.errors import CorruptionError, SegwalError, StorageError, UnsupportedFormatError
from segwal.format import naming
from segwal.format.keys import MAX_SIZE, KeysFile, decode, encode
from segwal.format.layout import SegmentHeader
from segwal.storage.fileio import FileSystem
from segwal.storage.replace import read_file, replace_file
from segwal.storage.segment import read_header
from segwal.types import Problem

KEYS_NAME: Final = naming.KEYS_NAME
KEYS_TEMP: Final = naming.KEYS_TEMP_NAME


def keys_path(directory: str) -> str:
    return posixpath.join(directory, KEYS_NAME)


def read_raw(fs: FileSystem, directory: str) -> bytes | None:
    """KEYS's bytes, or None when the log has none (it was never encrypted)."""
    return read_file(fs, keys_path(directory), MAX_SIZE)


def load(fs: FileSystem, directory: str) -> KeysFile | None:
    """The KEYS of ``directory``, or None when the log has none."""
    raw = read_raw(fs, directory)
    return None if raw is None else decode(raw, keys_path(directory))


def store(fs: FileSystem, directory: str, keys: KeysFile) -> None:
    """Replace KEYS atomically and durably."""
    replace_file(
        fs,
        keys_path(directory),
        encode(keys),
        temp=posixpath.join(directory, KEYS_TEMP),
        sync=lambda handle: handle.sync("keys.sync"),
        sync_dir=lambda: fs.sync_dir(directory, "keys.rename"),
    )


def settle(fs: FileSystem, directory: str) -> None:
    """Make the KEYS a writer found durable before it encrypts anything under it: a writer
    killed between KEYS's rename and its directory fsync leaves the new name in the page
    cache only, and a power loss could then bring back the old KEYS (or none) under
    segments the new one's keys encrypted. Its bytes were made durable before the rename."""
    fs.sync_dir(directory, "open.sync_dir")


def newest_log_id(fs: FileSystem, directory: str) -> bytes | None:
    """The log id in the header of the newest segment, if one is there and readable: the log
    a KEYS must belong to, checked before the writer lock is taken (recovery, which reads
    every header, checks it again under the lock)."""
    newest = newest_segment(fs, directory)
    return None if newest is None else newest[1].log_id


def newest_segment(fs: FileSystem, directory: str) -> tuple[str, SegmentHeader] | None:
    """The path and header of the newest segment (the active one), if one is there and
    its header is readable."""
    try:
        names = [e.name for e in fs.list_dir(directory) if e.is_file]
    except SegwalError:
        return None
    segments = sorted(n for n in names if naming.parse(n).kind is naming.Kind.SEGMENT)
    if not segments:
        return None
    try:
        path = posixpath.join(directory, segments[-1])
        handle = fs.open_read(path)
        try:
            return path, read_header(handle)
        finally:
            handle.close()
    except SegwalError:
        return None  # damage or a race with a writer: recovery sees and names it


def check(fs: FileSystem, directory: str, log_id: bytes | None) -> Problem | None:
    """What ``verify`` says of KEYS: unreadable, damaged, newer, or of another log (a
    problem every open would raise on); None when it is sound or absent. Needs no key: a
    wrong key cannot be told from here, only a damaged file."""
    path = keys_path(directory)
    try:
        stored = load(fs, directory)
    except CorruptionError as exc:
        return Problem(path=path, offset=exc.offset, lsn=None, reason=exc.reason)
    except UnsupportedFormatError as exc:
        return Problem(path=path, offset=0, lsn=None, reason=str(exc), kind="unsupported")
    except StorageError as exc:
        return Problem(path=path, offset=None, lsn=None, reason=exc.strerror or str(exc))
    if stored is not None and log_id is not None and stored.log_id != log_id:
        reason = f"KEYS belongs to log {stored.log_id.hex()}, the segments to log {log_id.hex()}"
        return Problem(path=path, offset=8, lsn=None, reason=reason)
    return None
