"""Whole-segment passes (the open scan of the active segment, a full replay) read each frame
once: they start with a full read window, so no small first read has to be repeated to
learn how long the first frame is (cold, each repeat is a device round trip)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import segwal
from segwal.storage.fileio import FileHandle, OsFileSystem
from segwal.storage.framereads import FIRST_CHUNK, READ_CHUNK

BATCHES = 6
PER_BATCH = 1000
PAYLOAD = 1024  # a batch is one frame of ~1 MB: larger than FIRST_CHUNK, below READ_CHUNK


class ReadLog(OsFileSystem):
    """The real file system, noting the (offset, size) of every read of a segment file."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[int, int]] = []

    def open_read(self, path: str) -> FileHandle:  # type: ignore[override]
        handle = super().open_read(path)
        reads = self.reads

        class Noting:
            def __getattr__(self, name: str) -> object:
                return getattr(handle, name)

            def pread(self, size: int, offset: int) -> bytes:
                if path.endswith(".wal"):
                    reads.append((offset, size))
                return handle.pread(size, offset)

        return Noting()  # type: ignore[return-value]


def _log(path: Path) -> None:
    with segwal.open(path, sync="never") as wal:
        for b in range(BATCHES):
            wal.append_batch([bytes([b]) * PAYLOAD] * PER_BATCH)


def _data_reads(reads: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [r for r in reads if r[0] != 0]  # the header read at offset 0 is not a frame read


def test_the_open_scan_reads_each_frame_once(tmp_path: Path) -> None:
    path = tmp_path / "log"
    _log(path)
    fs = ReadLog()
    # A readonly open scans the active segment (a writer's open after a clean close trusts
    # the mark and the sidecar instead: tests/test_closed_tail.py).
    with segwal.open(path, readonly=True, filesystem=fs) as wal:
        assert wal.last_lsn == BATCHES * PER_BATCH
        scan = _data_reads(fs.reads)
    starts = Counter(offset for offset, _ in scan)
    assert max(starts.values()) == 1, sorted(starts.items())
    assert scan[0][1] == READ_CHUNK
    assert len(scan) == BATCHES  # one read per frame: the last one reaches the end


def test_a_full_replay_reads_each_frame_once_and_read_batch_starts_small(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log"
    _log(path)
    fs = ReadLog()
    with segwal.open(path, sync="never", filesystem=fs) as wal:
        fs.reads.clear()
        assert sum(1 for _ in wal.replay()) == BATCHES * PER_BATCH
        replay = _data_reads(fs.reads)
        fs.reads.clear()
        assert sum(len(f.payloads) for f in wal.replay_frames()) == BATCHES * PER_BATCH
        frames = _data_reads(fs.reads)
        fs.reads.clear()
        batch = wal.read_batch(1, max_records=10)
        assert [r.lsn for r in batch.records] == list(range(1, 11))
        small = _data_reads(fs.reads)
    for reads in (replay, frames):
        starts = Counter(offset for offset, _ in reads)
        assert max(starts.values()) == 1, sorted(starts.items())
        assert reads[0][1] == READ_CHUNK and len(reads) == BATCHES
    # A read that may stop after a few records still starts with a small read.
    assert small[0][1] == FIRST_CHUNK
