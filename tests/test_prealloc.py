"""preallocate=True: a new segment gets its space ahead of the frames, on real files.

The format (docs/FORMAT.md, "Preallocated tail"): header flag PREALLOCATED (version 2);
the data ends at a frame boundary where every byte to the end of the file is zero; a seal
ends a sealed segment, so sealing trims the zeros. The durability protocol is in
docs/DURABILITY.md, "Preallocation"; the crash-state enumeration runs it in
test_crash_states (``test_every_sequence_of_two_steps_on_a_preallocated_log``).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import segwal
from segwal.errors import ConfigError, UnsupportedFormatError
from segwal.format.features import HEADER_PREALLOCATED
from segwal.format.layout import HEADER_SIZE, SEAL_SIZE, decode_header
from segwal.storage.fileio import OsFileSystem, zero_fill
from segwal.testing import MemoryFileSystem
from test_format_v2 import _released_v1

STEP = 4096  # segment_bytes below: the allocation step is min(segment_bytes, 1 MiB)


def _segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.wal"))


def _open(path: Path, **kw: object) -> segwal.Wal:
    options: dict[str, object] = {"segment_bytes": STEP, "preallocate": True}
    options.update(kw)
    return segwal.open(path, **options)  # type: ignore[arg-type]


def _data_end(path: Path) -> int:
    """Where the frames of a preallocated segment end: the first all-zero byte run."""
    raw = path.read_bytes()
    return len(raw.rstrip(b"\0"))


def test_a_new_segment_is_preallocated_and_flagged(tmp_path: Path) -> None:
    with _open(tmp_path) as wal:
        wal.append(b"x" * 100)
        (active,) = _segments(tmp_path)
        header = decode_header(active.read_bytes()[:HEADER_SIZE])
        assert header.version == 2 and header.flags == HEADER_PREALLOCATED
        assert active.stat().st_size == HEADER_SIZE + STEP  # one step, not the data's size
        end = _data_end(active)
        assert HEADER_SIZE < end < HEADER_SIZE + STEP
        assert active.read_bytes()[end:] == bytes(HEADER_SIZE + STEP - end)
    without = tmp_path / "plain"
    with segwal.open(without, segment_bytes=STEP) as wal:
        wal.append(b"x")
        assert decode_header(_segments(without)[0].read_bytes()[:HEADER_SIZE]).version == 1


def test_reopening_finds_no_torn_tail_and_appends_over_the_zeros(tmp_path: Path) -> None:
    payloads = [bytes([i]) * (50 + i) for i in range(20)]
    with _open(tmp_path) as wal:
        for p in payloads[:10]:
            wal.append(p)
    (active,) = _segments(tmp_path)
    size = active.stat().st_size
    with _open(tmp_path) as wal:
        assert wal.recovery.clean and not wal.recovery.torn_tail
        for p in payloads[10:]:
            wal.append(p)
        assert active.stat().st_size == size  # written into the space it had
    with segwal.open(tmp_path, segment_bytes=STEP) as wal:  # without the option: still read
        assert wal.recovery.clean
        assert [r.payload for r in wal.replay()] == payloads


def test_the_file_grows_a_step_at_a_time(tmp_path: Path) -> None:
    with _open(tmp_path, segment_bytes=4 << 20, max_record_bytes=1 << 16) as wal:
        wal.append(b"a" * 60_000)
        (active,) = _segments(tmp_path)
        first = active.stat().st_size
        assert first == HEADER_SIZE + (1 << 20)
        for _ in range(20):
            wal.append(b"b" * 60_000)
        assert active.stat().st_size == first + (1 << 20)  # the data passed one step
        assert [len(r.payload) for r in wal.replay()] == [60_000] * 21


def test_sealing_trims_the_zeros(tmp_path: Path) -> None:
    with _open(tmp_path) as wal:
        for i in range(60):  # several rotations at 4 KiB
            wal.append(bytes([i]) * 150)
        wal.rotate()
        sealed = _segments(tmp_path)[:-1]
        assert len(sealed) >= 2
    for path in sealed:
        raw = path.read_bytes()
        assert raw[-SEAL_SIZE + 4] == ord("S")  # ends with its seal, no zeros after it
    report = segwal.verify(tmp_path)
    assert report.ok, report.problems
    with segwal.open(tmp_path, readonly=True) as view:
        assert [r.payload for r in view.replay()] == [bytes([i]) * 150 for i in range(60)]


def test_a_released_reader_refuses_a_preallocated_segment(tmp_path: Path) -> None:
    """A version 1 reader would cut the zeros as a torn tail: the flag makes it refuse."""
    v1 = _released_v1()
    with _open(tmp_path) as wal:
        wal.append(b"x")
    raw = _segments(tmp_path)[0].read_bytes()
    with pytest.raises(v1.FormatError, match="newer") as info:
        v1.decode_header(raw[:HEADER_SIZE])
    assert info.value.newer


def test_an_unknown_header_flag_next_to_it_is_still_newer(tmp_path: Path) -> None:
    with _open(tmp_path) as wal:
        wal.append(b"x")
    (active,) = _segments(tmp_path)
    raw = bytearray(active.read_bytes())
    raw[10] |= 0x20  # bit 5: unassigned
    from segwal.format.layout import crc32c

    raw[124:128] = crc32c(bytes(raw[:124])).to_bytes(4, "little")
    active.write_bytes(bytes(raw))
    with pytest.raises(UnsupportedFormatError):
        segwal.open(tmp_path)


@pytest.mark.parametrize("what", ["garbage", "frame-head"])
def test_bytes_after_the_first_zero_head_are_a_torn_tail_cut(tmp_path: Path, what: str) -> None:
    """A write torn so that a later block reached the disk and the first did not leaves a
    zero frame head with non-zero bytes after it: a torn tail, cut and reported."""
    with _open(tmp_path) as wal:
        for i in range(5):
            wal.append(bytes([65 + i]) * 40)
    (active,) = _segments(tmp_path)
    end = _data_end(active)
    raw = bytearray(active.read_bytes())
    at = end + 700
    raw[at : at + 8] = b"\xffGARBAGE" if what == "garbage" else raw[HEADER_SIZE : HEADER_SIZE + 8]
    active.write_bytes(bytes(raw))
    with _open(tmp_path) as wal:
        assert wal.recovery.torn_tail
        assert wal.recovery.cuts[0].offset == end
        assert [r.payload for r in wal.replay()] == [bytes([65 + i]) * 40 for i in range(5)]
        wal.append(b"after")  # written at the cut, the space grown again
        assert wal.last_lsn == 6
    with _open(tmp_path) as wal:
        assert wal.recovery.clean
        assert wal.read(6).payload == b"after"


def test_strict_recovery_accepts_the_zeros(tmp_path: Path) -> None:
    with _open(tmp_path) as wal:
        wal.append(b"x" * 10)
    with _open(tmp_path, recovery="strict") as wal:
        assert wal.last_lsn == 1


def test_a_seal_followed_by_zeros_is_trimmed_before_the_next_segment(tmp_path: Path) -> None:
    """A writer killed between the seal's write and its barrier may leave the seal followed
    by the zeros it was trimming: still sealed; the next open trims, then starts a segment."""
    with _open(tmp_path) as wal:
        for i in range(3):
            wal.append(bytes([i]) * 30)
        wal.rotate()
    first = _segments(tmp_path)[0]
    sealed_size = first.stat().st_size
    for later in _segments(tmp_path)[1:]:
        later.unlink()  # as if the process died before the next segment was created
    with open(first, "ab") as f:
        f.write(bytes(STEP))
    with _open(tmp_path) as wal:
        assert wal.recovery.clean and wal.recovery.sealed_tail
        assert first.stat().st_size == sealed_size
        wal.append(b"next")
        assert [r.payload for r in wal.replay()][-1] == b"next"
    assert segwal.verify(tmp_path).ok


def test_zeros_after_a_seal_of_an_inner_segment_are_damage(tmp_path: Path) -> None:
    with _open(tmp_path) as wal:
        for i in range(3):
            wal.append(bytes([i]) * 30)
        wal.rotate()
        wal.append(b"tail")
    first = _segments(tmp_path)[0]
    with open(first, "ab") as f:
        f.write(bytes(512))
    report = segwal.verify(tmp_path)
    assert not report.ok and "follow the seal" in report.problems[0].reason
    with pytest.raises(segwal.CorruptionError):
        segwal.open(tmp_path)


def test_truncate_after_and_readonly_views(tmp_path: Path) -> None:
    with _open(tmp_path) as wal, segwal.open(tmp_path, readonly=True) as view:
        wal.append_batch([b"a" * 100] * 30)
        wal.append_batch([b"b" * 100] * 5)
        assert view.read(35).payload == b"b" * 100  # a readonly view looks again per read
        wal.truncate_after(32)
        wal.append(b"c")
        assert [r.payload for r in wal.replay(30)] == [b"a" * 100, b"b" * 100, b"b" * 100, b"c"]
    with _open(tmp_path) as wal:
        assert wal.recovery.clean and wal.last_lsn == 33
    assert segwal.verify(tmp_path).ok


def test_the_option_is_checked() -> None:
    with pytest.raises(ConfigError):
        segwal.open("/nonexistent-dir-never-made", preallocate=1)  # type: ignore[arg-type]


# -- the seam ------------------------------------------------------------------------------


def test_allocate_grows_with_zeros_and_keeps_the_bytes_it_has(tmp_path: Path) -> None:
    fs = OsFileSystem()
    handle = fs.create(str(tmp_path / "f"))
    try:
        handle.pwrite(b"data", 0)
        handle.allocate(2, 10_000)
        assert handle.size() == 10_002
        assert handle.pread(10, 0) == b"data" + bytes(6)
        handle.allocate(0, 100)  # inside the file: nothing visible changes
        assert handle.size() == 10_002
    finally:
        handle.close()


def test_zero_fill_is_the_fallback_where_fallocate_is_refused(tmp_path: Path) -> None:
    """The path taken when posix_fallocate fails with EOPNOTSUPP (tmpfs and ext4 accept it,
    so the fallback is run directly on a real file)."""
    path = tmp_path / "f"
    path.write_bytes(b"keep")
    fd = os.open(path, os.O_RDWR)
    try:
        zero_fill(fd, 0, 3 << 20)
    finally:
        os.close(fd)
    raw = path.read_bytes()
    assert len(raw) == 3 << 20 and raw[:4] == b"keep" and raw[4:] == bytes(len(raw) - 4)


def test_memory_allocate_is_a_pending_size_change() -> None:
    """The model: before a sync a crash keeps the old size or the allocated one (zeros,
    never garbage, in the allocated range); after it, the allocated size."""
    fs = MemoryFileSystem()
    fs.make_dir("/d")
    handle = fs.create("/d/f")
    handle.pwrite(b"head", 0)
    handle.sync("t")
    fs.sync_dir("/d", "t")
    handle.allocate(4, 1000)
    assert handle.size() == 1004 and handle.pread(8, 0) == b"head" + bytes(4)
    assert fs.ops[-1].kind == "allocate"
    contents = {image.tree()["/d/f"] for image in fs.crash_states()}
    assert contents == {b"head", b"head" + bytes(1000)}
    handle.allocate(0, 10)  # inside the file: no operation
    assert fs.ops[-1].kind == "allocate" and handle.size() == 1004
    handle.sync("t")
    assert {image.tree()["/d/f"] for image in fs.crash_states()} == {b"head" + bytes(1000)}
    fs.fail("allocate", error=errno.ENOSPC)
    with pytest.raises(segwal.StorageError):
        handle.allocate(1004, 10)
    assert handle.size() == 1004


def test_a_failed_allocation_fails_the_append_and_keeps_the_log() -> None:
    fs = MemoryFileSystem()
    wal = segwal.open("/log", filesystem=fs, segment_bytes=STEP, preallocate=True)
    wal.append(b"x" * 100)
    fs.fail("allocate", error=errno.ENOSPC)
    with pytest.raises(segwal.StorageError):
        wal.append(b"y" * 5000)  # past the first step: needs the next
    wal.close()
    with segwal.open("/log", filesystem=fs, segment_bytes=STEP) as again:
        assert [r.payload for r in again.replay()] == [b"x" * 100]


def test_a_preallocated_log_is_archived_and_restored(tmp_path: Path) -> None:
    """The uploader reads sealed segments (trimmed: no zeros travel); a restore reads back
    what was written and opens as a log."""
    archive = (tmp_path / "archive").as_uri()
    payloads = [bytes([i % 251]) * 120 for i in range(80)]
    with segwal.open(
        tmp_path / "log", archive=archive, segment_bytes=STEP, preallocate=True
    ) as wal:
        for p in payloads:
            wal.append(p)
        wal.rotate()
        assert wal.wait_archived(wal.last_lsn, timeout=30), wal.archive_status()
    objects = [p for p in (tmp_path / "archive").rglob("*") if p.is_file()]
    assert objects
    segwal.restore(archive, tmp_path / "restored")
    with segwal.open(tmp_path / "restored") as restored:
        assert [r.payload for r in restored.replay()] == payloads
