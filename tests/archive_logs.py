"""Archives made by a real archiving writer on the in-memory store, shared by tests."""

from __future__ import annotations

from pathlib import Path

import segwal
from segwal.archive.catalog import read_listing
from segwal.archive.memory import MemoryStore


def forked_archive(tmp_path: Path) -> tuple[MemoryStore, list[str]]:
    """60 records archived, a rewind to 40 and 30 more: two generations, the second forked
    from the first; returns the store and the generations, oldest first."""
    store = MemoryStore()
    with segwal.open(tmp_path / "log", archive=store, segment_bytes=4096) as wal:
        for _ in range(60):
            wal.append(b"x" * 200)
        wal.rotate()
        assert wal.wait_archived(wal.last_lsn, timeout=30)
        wal.truncate_after(40)
        for _ in range(30):
            wal.append(b"y" * 200)
        wal.rotate()
        assert wal.wait_archived(wal.last_lsn, timeout=30)
    return store, list(read_listing(store).generations)
