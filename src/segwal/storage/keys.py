"""Reading and replacing the ``KEYS`` file; its bytes are ``format.keys``'s.

Replaced whole through ``storage.replace`` like META (temp file, fdatasync, rename,
directory fsync): a crash leaves the old key set or the new one, never a mix, so a rotation
cut short never costs a key. A new log's KEYS is durable before its first encrypted segment
exists, or a crash could leave segments that no key opens.
"""

from __future__ import annotations

import posixpath
from typing import Final

from segwal.format import naming
from segwal.format.keys import MAX_SIZE, KeysFile, decode, encode
from segwal.storage.fileio import FileSystem
from segwal.storage.replace import read_file, replace_file

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
