"""Shared test helpers: deterministic payloads, a steerable clock, a fresh log directory.

Import the plain helpers with ``from conftest import payload, FakeClock``; the fixtures need
no import.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

# A real S3 server (Ceph RGW) for the archive tests: fixtures ceph, ceph_s3, ceph_s3_plain/tls.
pytest_plugins = ["ceph_fixture"]


def payload(lsn: int, size: int | None = None) -> bytes:
    """The payload the tests write at ``lsn``: deterministic, distinct per LSN, any size.

    Without ``size`` the length varies with the LSN (0..63 bytes, so some are empty).
    """
    if size is None:
        size = (lsn * 7919) % 64
    seed = hashlib.blake2b(lsn.to_bytes(8, "little"), digest_size=32).digest()
    return (seed * (size // len(seed) + 1))[:size]


class FakeClock:
    """A clock in microseconds that only moves when a test moves it (``clock=`` option)."""

    def __init__(self, start_us: int = 1_700_000_000_000_000) -> None:
        self.now_us = start_us

    def __call__(self) -> int:
        return self.now_us

    def advance(self, seconds: float) -> None:
        """Move the clock by ``seconds`` (negative to step it back)."""
        self.now_us += round(seconds * 1_000_000)


@pytest.fixture
def wal_dir(tmp_path: Path) -> str:
    """A path for a new log directory (not created yet) on the real file system."""
    return str(tmp_path / "wal")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def forget_clean_close(directory: str | Path, fs: object = None) -> None:
    """Take a clean close's mark out of META, as a killed writer would have left the log.

    Tests that damage a log's tail to stand for a torn write need a log whose writer did not
    close cleanly: after a clean close, damage before the mark is bit rot and is raised.
    """
    import posixpath

    from segwal.format.meta import Meta
    from segwal.storage.fileio import OsFileSystem
    from segwal.storage.meta import META_NAME, load, store

    filesystem = fs if fs is not None else OsFileSystem()
    path = str(directory)
    meta = load(filesystem, path)  # type: ignore[arg-type]
    if meta is None or meta.closed is None:
        return
    bare = meta.with_(closed=None, tail=None)
    if bare == Meta():
        filesystem.unlink(posixpath.join(path, META_NAME))  # type: ignore[attr-defined]
        filesystem.sync_dir(path, "test")  # type: ignore[attr-defined]
    else:
        store(filesystem, path, bare)  # type: ignore[arg-type]
