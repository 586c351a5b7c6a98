"""A readonly view reads LOCK through one open handle (storage/lockfile.py LockWatch)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import segwal
from segwal.format.naming import LOCK_NAME
from segwal.storage.fileio import OsFile, OsFileSystem
from segwal.storage.lockfile import LockWatch


class CountingFileSystem(OsFileSystem):
    """The real file system, counting the opens of each file name."""

    def __init__(self) -> None:
        super().__init__()
        self.opens: dict[str, int] = {}

    def open_read(self, path: str) -> OsFile:
        name = os.path.basename(path)
        self.opens[name] = self.opens.get(name, 0) + 1
        return super().open_read(path)


def test_a_readonly_view_opens_lock_once_for_many_reads(tmp_path: Path) -> None:
    with segwal.open(tmp_path, sync="always") as wal:
        wal.append_batch([b"x" * 100] * 100)
        fs = CountingFileSystem()
        with segwal.open(tmp_path, readonly=True, filesystem=fs) as view:
            assert view.read(1).payload == b"x" * 100
            opened = fs.opens[LOCK_NAME]
            for lsn in range(2, 101):
                assert view.read(lsn).payload == b"x" * 100
            # No open per read (each read still looks at LOCK's bytes), unless a second
            # passed and the handle was opened again.
            assert fs.opens[LOCK_NAME] - opened <= 1
            wal.append(b"later")  # the view sees it through the same handle
            assert view.read(101).payload == b"later"


def test_a_replaced_lock_is_seen_after_the_reopen_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = tmp_path / LOCK_NAME
    lock.write_bytes(b"first" * 40)
    watch = LockWatch(OsFileSystem(), str(tmp_path))
    first = watch.read()
    assert first is not None and first.startswith(b"first")
    (tmp_path / "new").write_bytes(b"other" * 40)
    os.rename(tmp_path / "new", lock)
    assert watch.read() == first  # the open handle still reads the replaced file
    monkeypatch.setattr(LockWatch, "REOPEN_SECONDS", 0.0)
    again = watch.read()
    assert again is not None and again.startswith(b"other")
    lock.unlink()
    assert watch.read() is None
    watch.close()
    lock.write_bytes(b"third" * 40)
    assert watch.read() is None  # closed: never opened again
