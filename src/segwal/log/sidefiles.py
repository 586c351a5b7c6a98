"""Small files a tool above the log keeps in the log's directory (the archive's
``ARCHIVE.state``; the ``KEYS`` the archive reads): read whole, and replaced atomically and
durably, through the log's file system (``Wal.filesystem``) with the protocol META uses
(``storage.replace``: temp file, fsync, rename, directory fsync, each barrier with its own
call-site label).

This is the documented hook the archive layer uses instead of importing ``storage``
(tests/test_layers.py): going through the log's file system is what lets the crash-state
enumeration on the in-memory file system cover the archive's files too.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable

from segwal.storage.fileio import FileHandle, FileSystem, OsFileSystem
from segwal.storage.replace import read_file, replace_file

__all__ = ["FileHandle", "FileSystem", "OsFileSystem", "read_small", "replace_small"]


def read_small(fs: FileSystem | None, path: str, limit: int) -> bytes | None:
    """The bytes of the file ``path`` (None when it does not exist); CorruptionError when it
    is larger than ``limit``, before anything that size is read. ``fs`` None: the OS."""
    return read_file(fs or OsFileSystem(), path, limit)


def replace_small(
    fs: FileSystem | None,
    directory: str,
    name: str,
    data: bytes,
    *,
    temp_name: str,
    sync: Callable[[FileHandle], None],
    sync_dir: Callable[[FileSystem], None],
) -> None:
    """Replace ``directory/name`` with ``data`` through ``directory/temp_name``: ``sync``
    makes the temp file's bytes durable before the rename (a handle's sync with the
    barrier's label), ``sync_dir`` the rename before this returns (the file system's
    directory fsync with its label); the caller writes the labels out in those calls, so
    the barrier tests find them. ``fs`` None: the OS."""
    files = fs or OsFileSystem()
    replace_file(
        files,
        posixpath.join(directory, name),
        data,
        temp=posixpath.join(directory, temp_name),
        sync=sync,
        sync_dir=lambda: sync_dir(files),
    )
