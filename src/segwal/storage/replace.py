"""Small files beside the segments (META, cursor files): reading one whole, and replacing
one atomically and durably, the one protocol they and anything new of that kind go through.

Write the new bytes to a temp name, make them durable, rename the temp over the file, make
the rename durable. A crash leaves the old content or the new, never a mix, and once this
returns the new content survives a power loss. The caller hands in the two barriers, each
with its own call-site label, so the crash tests can switch either off.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from segwal.errors import CorruptionError, StorageError
from segwal.storage.fileio import FileHandle, FileSystem


def replace_file(
    fs: FileSystem,
    path: str,
    data: bytes,
    *,
    temp: str,
    sync: Callable[[FileHandle], None],
    sync_dir: Callable[[], None],
) -> None:
    """Replace ``path`` with ``data`` through ``temp``; ``sync(handle)`` makes the temp file's
    bytes durable, ``sync_dir()`` the rename."""
    try:
        fs.unlink(temp)  # a leftover of a replace cut short
    except StorageError as exc:
        if exc.errno != errno.ENOENT:
            raise
    handle = fs.create(temp)
    try:
        handle.pwrite(data, 0)
        # The new content must be durable before the name points at it.
        sync(handle)
    finally:
        handle.close()
    fs.rename(temp, path)
    # The rename is what makes the new content count: it must survive.
    sync_dir()


def read_file(fs: FileSystem, path: str, limit: int) -> bytes | None:
    """The bytes of the small file ``path`` (None when it does not exist); CorruptionError
    when it is larger than ``limit``, before anything that size is read."""
    try:
        handle = fs.open_read(path)
    except StorageError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    try:
        # Read what is there, up to one byte past the limit: never allocate for a size a
        # damaged or foreign file claims (a directory's read fails here with EISDIR).
        raw = handle.pread(min(handle.size(), limit + 1), 0)
    finally:
        handle.close()
    if len(raw) > limit:
        raise CorruptionError(f"file is larger than {limit} bytes", path=path, offset=0)
    return raw
