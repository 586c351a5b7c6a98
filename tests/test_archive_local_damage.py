"""A damaged metadata file in a file:// archive is a typed ArchiveCorruptError naming the
object, reported by verify and refused by restore, never a JSONDecodeError (review defect 8)."""

from __future__ import annotations

from pathlib import Path

import pytest

import segwal
from segwal.archive.catalog import verify_archive
from segwal.archive.urls import open_store


@pytest.mark.parametrize("damage", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_a_damaged_metadata_file_is_named(tmp_path: Path, damage: bytes) -> None:
    url = f"file://{tmp_path}/arch"
    with segwal.open(tmp_path / "log", archive=url, segment_bytes=4096) as wal:
        for _ in range(30):
            wal.append(b"x" * 200)
        wal.rotate()
        assert wal.wait_archived(wal.last_lsn, timeout=30)
    meta = sorted((tmp_path / "arch" / "o").glob("*seg*/meta"))[0]
    meta.write_bytes(damage)
    store = open_store(url)
    with pytest.raises(segwal.ArchiveCorruptError, match="metadata") as caught:
        store.head(next(i.key for i in store.list("g/") if i.key.endswith("1.wal")))
    assert caught.value.key is not None and caught.value.key.endswith(".wal")
    report = verify_archive(store)
    assert [p.kind for p in report.problems] == ["corrupt"]
    assert "metadata" in report.problems[0].reason
    with pytest.raises(segwal.ArchiveCorruptError):
        segwal.restore(store, tmp_path / "r")
