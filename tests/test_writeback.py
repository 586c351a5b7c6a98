"""Early writeback (storage/segment.py SegmentWriter.write, storage/fileio.py
OsFile.start_writeback): a segment's writer starts the disk writing every WRITEBACK_BYTES
written, so that the next barrier (a sync, a seal) waits for less. It is never a barrier:
nothing is declared durable by it, and a log whose handles lack it works as before."""

from __future__ import annotations

import os
from pathlib import Path

import segwal
from segwal.format import framing
from segwal.format.framing import encode_frames, split_batch
from segwal.storage.fileio import OsFileSystem
from segwal.storage.segment import WRITEBACK_BYTES
from segwal.testing import MemoryFileSystem


def test_writeback_starts_cover_what_was_written_in_steps() -> None:
    fs = MemoryFileSystem()
    with segwal.open("/log", filesystem=fs, sync="never") as wal:
        for _ in range(40):
            wal.append_batch([b"x" * 65536] * 8)  # 512 KiB a batch, 20 MiB in all
        starts = [s for s in fs.writeback_starts if s[0].endswith(".wal")]
        assert len(starts) >= 20 * 2**20 // WRITEBACK_BYTES - 1
        end = None
        for _path, offset, length in starts:
            assert length >= WRITEBACK_BYTES
            assert end is None or offset == end  # contiguous: each starts where the last ended
            end = offset + length
        writer = wal._state.writer
        assert writer is not None and end is not None and end <= writer.offset
        assert writer.synced < writer.offset  # nothing became durable by it
        assert wal.durable_lsn == 0


def test_direct_io_segments_start_no_writeback(tmp_path: Path) -> None:
    fs = MemoryFileSystem()
    with segwal.open("/log", filesystem=fs, sync="never", direct_io=True) as wal:
        for _ in range(20):
            wal.append_batch([b"y" * 65536] * 8)
    assert not [s for s in fs.writeback_starts if s[0].endswith(".wal")]


def test_a_real_file_starts_writeback_and_ignores_what_it_cannot(tmp_path: Path) -> None:
    path = str(tmp_path / "f")
    fs = OsFileSystem()
    handle = fs.create(path)
    handle.pwrite(os.urandom(3 << 20), 0)
    handle.start_writeback(0, 3 << 20)  # type: ignore[attr-defined]
    handle.start_writeback(1 << 40, 4096)  # past the end: nothing to write, no error
    handle.sync("test")
    handle.close()
    handle.start_writeback(0, 4096)  # type: ignore[attr-defined]  # closed: nothing
    with segwal.open(tmp_path / "log", sync="never") as wal:
        for _ in range(6):
            wal.append_batch([b"z" * 65536] * 8)
        wal.sync()
    with segwal.open(tmp_path / "log", readonly=True) as view:
        assert sum(1 for _ in view.replay()) == 48


def test_a_batch_of_several_frames_is_its_frames_one_after_another() -> None:
    """encode_frames joins a multi-frame batch in one buffer: byte for byte the frames
    _encode_frame makes one at a time."""
    sizes = (70_000, 3, 0, 900_000, 65_536, 1, 900_000, 17, 1_100_000, 5)
    payloads = [os.urandom(n) for n in sizes]
    payloads += [b"p%d" % i for i in range(3000)]
    lengths = [len(p) for p in payloads]
    kwargs = {"seed": 0x1234, "record_type": 7, "timestamp_us": 99, "durable_lsn": 5}
    got = encode_frames(first_lsn=100, payloads=payloads, lengths=lengths, **kwargs)
    bounds = split_batch(lengths)
    assert len(bounds) > 2
    expected = b"".join(
        framing._encode_frame(
            0x1234,
            100 + start,
            7,
            99,
            5,
            payloads[start:stop],
            lengths[start:stop],
            size,
            k == len(bounds) - 1,
        )
        for k, (start, stop, size) in enumerate(bounds)
    )
    assert bytes(got) == expected
