"""A local directory as an object store (``file:///path`` URLs), for users without S3.

Layout under the root directory::

    o/<quoted key>/data    the object's bytes, byte for byte
    o/<quoted key>/meta    its metadata, JSON (the sidecar)
    tmp/                   objects being built and objects being deleted

An object is a directory holding both files, so data and metadata appear together: it is
built and fsynced under ``tmp/`` and published with one ``rename``. Renaming a directory
onto a name that already holds a (non-empty) directory fails, which makes
``put_if_absent`` atomic between threads and processes without a lock: exactly one
creator wins. After the rename the parent is fsynced, so an acknowledged put survives a
power loss. Keys are percent-quoted into one flat directory (``/`` included), so a key can
be both an object and a prefix of others, as in S3; listings sort the unquoted keys.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import quote, unquote

from segwal.archive.store import ObjectInfo
from segwal.errors import (
    ArchiveAccessError,
    ArchiveCorruptError,
    ArchiveError,
    ArchiveNotFoundError,
    ArchiveUnavailableError,
)

DATA = "data"
META = "meta"
# A file name holds at most 255 bytes on Linux file systems; quoting can triple a key.
MAX_QUOTED_KEY = 255
STALE_SECONDS = 3600.0


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore:
    """An :class:`~segwal.archive.store.ObjectStore` in a local directory."""

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.url = Path(self.root).as_uri()
        self._objects = os.path.join(self.root, "o")
        self._tmp = os.path.join(self.root, "tmp")
        try:
            if create:
                os.makedirs(self._objects, exist_ok=True)
                os.makedirs(self._tmp, exist_ok=True)
                # The directories themselves must survive a power loss before any put is
                # acknowledged in them.
                for directory in (self.root, os.path.dirname(self.root)):
                    _fsync_dir(directory)
            elif not os.path.isdir(self._objects) or not os.path.isdir(self._tmp):
                raise ArchiveAccessError("not an archive directory (create=False)", url=self.url)
            self._sweep()
        except OSError as exc:
            raise self._error(exc, "cannot prepare the archive directory") from exc

    def _sweep(self) -> None:
        """Remove what a crash left in tmp/ (objects half built or half deleted), if older
        than STALE_SECONDS: a younger one may belong to a put running in another process."""
        now = time.time()
        for entry in os.scandir(self._tmp):
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime > STALE_SECONDS:
                    shutil.rmtree(entry.path, ignore_errors=True)
            except FileNotFoundError:
                continue

    # -- helpers ---------------------------------------------------------------------

    def _error(self, exc: OSError, what: str, key: str | None = None) -> ArchiveError:
        """An OS error as the archive's typed error: permissions and a missing or
        read-only root are for good, anything else (EIO, ENOSPC...) may pass."""
        message = f"{what}: {exc.strerror or exc}"
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.ENOENT):
            return ArchiveAccessError(message, url=self.url, key=key)
        return ArchiveUnavailableError(message, url=self.url, key=key)

    def _dir(self, key: str) -> str:
        if not key or key.startswith("/") or "\0" in key:
            raise ArchiveError(f"invalid object key {key!r}", url=self.url)
        quoted = quote(key, safe="")
        if len(quoted.encode()) > MAX_QUOTED_KEY:
            raise ArchiveError("object key too long for a local directory", url=self.url, key=key)
        return os.path.join(self._objects, quoted)

    def _build(self, data: bytes, metadata: Mapping[str, str] | None) -> str:
        """An object directory under tmp/, fsynced, ready to be renamed into place."""
        staging = os.path.join(self._tmp, uuid.uuid4().hex)
        os.mkdir(staging)
        try:
            _write_file(os.path.join(staging, DATA), data)
            meta = json.dumps(dict(metadata or {}), sort_keys=True).encode()
            _write_file(os.path.join(staging, META), meta)
            _fsync_dir(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return staging

    def _read_meta(self, directory: str, key: str) -> dict[str, str]:
        with open(os.path.join(directory, META), "rb") as f:
            raw = f.read()
        try:
            loaded = json.loads(raw)
            if not isinstance(loaded, dict):
                raise ValueError("not an object")
        except ValueError:  # a damaged file is damage to name, not a crash
            raise ArchiveCorruptError(
                "the object's metadata file is not a JSON object (damaged)",
                url=self.url,
                key=key,
            ) from None
        return {str(k): str(v) for k, v in loaded.items()}

    # -- the protocol ----------------------------------------------------------------

    def put_if_absent(
        self, key: str, data: bytes, metadata: Mapping[str, str] | None = None
    ) -> bool:
        target = self._dir(key)
        try:
            staging = self._build(data, metadata)
            try:
                os.rename(staging, target)
            except OSError as exc:
                shutil.rmtree(staging, ignore_errors=True)
                # rename(2) onto a non-empty directory: another creator won.
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    return False
                raise
            _fsync_dir(self._objects)
        except OSError as exc:
            raise self._error(exc, "cannot create the object", key) from exc
        return True

    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> None:
        target = self._dir(key)
        try:
            staging = self._build(data, metadata)
            while True:
                try:
                    os.rename(staging, target)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        shutil.rmtree(staging, ignore_errors=True)
                        raise
                # Move the old object aside (one rename, so readers see old or new, or
                # briefly nothing), then retry: a racing put may have landed meanwhile.
                self._discard(target)
            _fsync_dir(self._objects)
        except OSError as exc:
            raise self._error(exc, "cannot write the object", key) from exc

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        if start < 0 or (end is not None and end < start):
            raise ArchiveError(f"invalid range {start}..{end}", url=self.url, key=key)
        try:
            with open(os.path.join(self._dir(key), DATA), "rb") as f:
                size = os.fstat(f.fileno()).st_size
                stop = size if end is None else min(end, size)
                if start >= stop:
                    return b""
                f.seek(start)
                body = f.read(stop - start)
        except FileNotFoundError as exc:
            raise ArchiveNotFoundError("no such object", url=self.url, key=key) from exc
        except OSError as exc:
            raise self._error(exc, "cannot read the object", key) from exc
        if len(body) != stop - start:  # the file shrank under us: never return short
            raise ArchiveUnavailableError(
                f"short read: {len(body)} of {stop - start} bytes", url=self.url, key=key
            )
        return body

    def head(self, key: str) -> ObjectInfo | None:
        directory = self._dir(key)
        try:
            size = os.stat(os.path.join(directory, DATA)).st_size
            metadata = self._read_meta(directory, key)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._error(exc, "cannot read the object", key) from exc
        return ObjectInfo(key=key, size=size, metadata=metadata)

    def list(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        try:
            names = os.listdir(self._objects)
        except OSError as exc:
            raise self._error(exc, "cannot list the archive directory") from exc
        keys = sorted(
            key for key in map(unquote, names) if key.startswith(prefix) and key > start_after
        )
        for key in keys:
            try:
                size = os.stat(os.path.join(self._dir(key), DATA)).st_size
            except FileNotFoundError:
                continue  # deleted since the directory was read
            except OSError as exc:
                raise self._error(exc, "cannot list the object", key) from exc
            yield ObjectInfo(key=key, size=size)

    def _discard(self, target: str) -> None:
        """Rename ``target`` out of the namespace (atomic), then remove it."""
        trash = os.path.join(self._tmp, uuid.uuid4().hex)
        try:
            os.rename(target, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def delete(self, key: str) -> None:
        target = self._dir(key)
        try:
            self._discard(target)
            _fsync_dir(self._objects)
        except OSError as exc:
            raise self._error(exc, "cannot delete the object", key) from exc

    def close(self) -> None:
        """Nothing to release: every call opens and closes its own files."""

    def __repr__(self) -> str:
        return f"LocalStore({self.root!r})"
