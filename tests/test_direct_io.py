"""direct_io=True: O_DIRECT writes of whole 4 KiB blocks from a page-aligned buffer.

Each write rewrites the partial last block from the bytes already stored there (copied,
never re-encoded) plus the new frames, zero-padded to the block's end; the zeros are the
preallocated tail of docs/FORMAT.md (header flag PREALLOCATED), and a seal trims them. A
file system that refuses O_DIRECT makes the open fail with StorageError (errno EINVAL)
before anything is published. The crash-state enumeration runs it in test_crash_states
(``test_every_sequence_of_two_steps_with_direct_io``).
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

import segwal
from segwal.errors import ConfigError
from segwal.format.features import HEADER_PREALLOCATED
from segwal.format.layout import HEADER_SIZE, SEAL_SIZE, decode_header
from segwal.storage.fileio import DIRECT_BLOCK, OsFileSystem
from segwal.testing import MemoryFileSystem
from test_format_v2 import _released_v1

SEGMENT = 64 << 10


def _segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.wal"))


def _open(path: Path, **kw: object) -> segwal.Wal:
    options: dict[str, object] = {"segment_bytes": SEGMENT, "direct_io": True}
    options.update(kw)
    return segwal.open(path, **options)  # type: ignore[arg-type]


def test_records_round_trip_through_block_rewrites(tmp_path: Path) -> None:
    payloads = [bytes([i % 256]) * (30 + i % 200) for i in range(600)]
    with _open(tmp_path) as wal:
        for p in payloads[:300]:
            wal.append(p)  # each rewrites the partial last block
        wal.append_batch(payloads[300:])
        active = _segments(tmp_path)[-1]
        header = decode_header(active.read_bytes()[:HEADER_SIZE])
        assert header.flags & HEADER_PREALLOCATED and header.version == 2
    with _open(tmp_path) as wal:
        assert wal.recovery.clean
        wal.append(b"after reopen")  # resumes inside a block: its stored bytes reread
    with segwal.open(tmp_path, segment_bytes=SEGMENT) as wal:  # buffered: reads the same
        assert wal.recovery.clean
        assert [r.payload for r in wal.replay()] == [*payloads, b"after reopen"]
    assert segwal.verify(tmp_path).ok


def test_sealed_segments_end_with_their_seal(tmp_path: Path) -> None:
    with _open(tmp_path, segment_bytes=8192) as wal:
        for i in range(200):
            wal.append(bytes([i]) * 90)
        wal.rotate()
    sealed = _segments(tmp_path)[:-1]
    assert len(sealed) > 3
    for path in sealed:
        raw = path.read_bytes()
        assert raw[-SEAL_SIZE + 4] == ord("S"), path  # the block's zeros were trimmed
    assert segwal.verify(tmp_path).ok


def test_encrypted_blocks_are_rewritten_from_the_stored_bytes(tmp_path: Path) -> None:
    """A later append rewrites the block holding earlier encrypted frames: their stored
    bytes (nonces and ciphertext) stay byte for byte what they were."""
    pytest.importorskip("cryptography")
    with _open(tmp_path, encryption_key=bytes(range(32))) as wal:
        wal.append(b"first" * 10)
        (active,) = _segments(tmp_path)
        before = active.read_bytes()
        end = len(before.rstrip(b"\0"))
        for i in range(20):
            wal.append(bytes([i]) * 50)
        after = active.read_bytes()
        assert after[:end] == before[:end]
    with segwal.open(tmp_path, encryption_key=bytes(range(32))) as wal:
        assert next(r.payload for r in wal.replay()) == b"first" * 10


def test_a_released_reader_refuses_the_segments(tmp_path: Path) -> None:
    v1 = _released_v1()
    with _open(tmp_path) as wal:
        wal.append(b"x")
    with pytest.raises(v1.FormatError, match="newer"):
        v1.decode_header(_segments(tmp_path)[0].read_bytes()[:HEADER_SIZE])


def test_real_o_direct_handles_take_aligned_blocks(tmp_path: Path) -> None:
    import mmap

    fs = OsFileSystem()
    path = str(tmp_path / "f")
    fs.create(path).close()
    handle = fs.open_direct(path)
    buf = mmap.mmap(-1, DIRECT_BLOCK)
    try:
        buf[:5] = b"hello"
        handle.pwrite(buf, 0)
        handle.sync("t")
        assert handle.pread(5, 0) == b"hello" and handle.size() == DIRECT_BLOCK
        with pytest.raises(segwal.StorageError) as info:
            handle.pwrite(b"x" * 100, 1)  # unaligned: refused by the kernel
        assert info.value.errno == errno.EINVAL
    finally:
        handle.close()
        buf.close()


def test_a_file_system_refusing_o_direct_fails_the_open_and_publishes_nothing() -> None:
    """The fallback is an error, not buffered writes: a log opened with direct_io=True
    either writes O_DIRECT or does not open (tmpfs refused O_DIRECT before Linux 6.6;
    the in-memory file system's refuse_direct models it)."""
    fs = MemoryFileSystem(refuse_direct=True)
    with pytest.raises(segwal.StorageError) as info:
        segwal.open("/log", filesystem=fs, direct_io=True)
    assert info.value.errno == errno.EINVAL
    assert not [p for p in fs.tree() if p.endswith(".wal")]  # no segment published
    with segwal.open("/log", filesystem=fs) as wal:  # without the option: a usable log
        wal.append(b"x")
    other = MemoryFileSystem()
    segwal.open("/log", filesystem=other, direct_io=True).close()
    other.refuse_direct = True
    with pytest.raises(segwal.StorageError) as info:  # resuming its tail refuses alike
        segwal.open("/log", filesystem=other, direct_io=True)
    assert info.value.errno == errno.EINVAL


def test_the_memory_file_system_enforces_alignment() -> None:
    fs = MemoryFileSystem()
    fs.make_dir("/d")
    fs.create("/d/f").close()
    handle = fs.open_direct("/d/f")
    with pytest.raises(segwal.StorageError) as info:
        handle.pwrite(b"x" * 100, 0)
    assert info.value.errno == errno.EINVAL
    handle.pwrite(bytes(DIRECT_BLOCK), DIRECT_BLOCK)
    assert handle.size() == 2 * DIRECT_BLOCK


def test_direct_io_on_the_memory_file_system_round_trips() -> None:
    fs = MemoryFileSystem()
    with segwal.open("/log", filesystem=fs, direct_io=True, segment_bytes=8192) as wal:
        for i in range(100):
            wal.append(bytes([i]) * 70)
        wal.truncate_after(90)
        wal.append(b"z")
    with segwal.open("/log", filesystem=fs) as wal:
        assert wal.recovery.clean and wal.last_lsn == 91
        assert wal.read(91).payload == b"z"


def test_the_option_is_checked() -> None:
    with pytest.raises(ConfigError):
        segwal.open("/nonexistent-dir-never-made", direct_io="yes")  # type: ignore[arg-type]
