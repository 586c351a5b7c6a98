"""Reading and replacing the ``META`` file; its bytes are ``format.meta``'s.

It is replaced whole through ``storage.replace`` (temp file, fdatasync, rename, directory
fsync), so a crash leaves the old version or the new one, never a mix.
"""

from __future__ import annotations

import posixpath
from typing import Final

from segwal.format import naming
from segwal.format.meta import HEAD, MAX_BODY, Meta, decode, encode
from segwal.storage.fileio import FileSystem
from segwal.storage.replace import read_file, replace_file

META_NAME: Final = naming.META_NAME
META_TEMP: Final = naming.META_TEMP_NAME


def load(fs: FileSystem, directory: str) -> Meta | None:
    """The META of ``directory``, or None when the log has none yet."""
    path = posixpath.join(directory, META_NAME)
    raw = read_file(fs, path, HEAD.size + MAX_BODY)
    return None if raw is None else decode(raw, path)


def store(fs: FileSystem, directory: str, meta: Meta) -> None:
    """Replace META atomically and durably."""
    replace_file(
        fs,
        posixpath.join(directory, META_NAME),
        encode(meta),
        temp=posixpath.join(directory, META_TEMP),
        sync=lambda handle: handle.sync("meta.sync"),
        sync_dir=lambda: fs.sync_dir(directory, "meta.rename"),
    )
