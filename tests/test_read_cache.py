"""The frame cache of point reads (log/framecache.py): what it serves, what it never keeps."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import segwal
from segwal.errors import ChecksumError, ClosedError, ConfigError, NotFoundError
from segwal.log.framecache import FrameCache
from segwal.log.wal import Wal


def _cache(wal: Wal) -> FrameCache:
    return wal._state.catalog.frames


def _payload(lsn: int) -> bytes:
    return lsn.to_bytes(8, "little") * 12


def _fill(wal: Wal, batches: int, size: int = 100) -> None:
    for b in range(batches):
        first = b * size + 1
        wal.append_batch([_payload(lsn) for lsn in range(first, first + size)])
    wal.sync()


def _damage(path: Path, needle: bytes) -> None:
    """Flip a byte of the first payload equal to ``needle`` in every segment file."""
    for segment in path.glob("*.wal"):
        data = bytearray(segment.read_bytes())
        at = data.find(needle)
        if at >= 0:
            data[at] ^= 0xFF
            segment.write_bytes(bytes(data))


def test_a_cached_read_decodes_from_memory_without_rechecking(tmp_path: Path) -> None:
    with segwal.open(tmp_path, sync="never") as wal:
        _fill(wal, 5)
        assert wal.read(150).payload == _payload(150)
        assert _cache(wal).misses == 1 and len(_cache(wal)) == 1
        _damage(tmp_path, _payload(160))
        # The frame's CRC was checked when it entered the cache: the damage is not seen.
        assert wal.read(160).payload == _payload(160)
        assert _cache(wal).hits == 1
        with pytest.raises(ChecksumError):
            list(wal.replay(101, 200))  # a stream checks every frame again


def test_without_the_cache_every_read_checks_its_frame(tmp_path: Path) -> None:
    with segwal.open(tmp_path, sync="never", read_cache_bytes=0) as wal:
        _fill(wal, 5)
        assert wal.read(150).payload == _payload(150)
        _damage(tmp_path, _payload(160))
        with pytest.raises(ChecksumError):
            wal.read(160)
        assert len(_cache(wal)) == 0


def test_unsynced_frames_are_never_cached(tmp_path: Path) -> None:
    with segwal.open(tmp_path, sync="never") as wal:
        _fill(wal, 1)
        wal.append_batch([_payload(lsn) for lsn in range(101, 201)])
        assert wal.read(150, unsynced=True).payload == _payload(150)
        assert len(_cache(wal)) == 0
        wal.sync()
        assert wal.read(150).payload == _payload(150)
        assert len(_cache(wal)) == 1


def test_a_rewind_never_serves_the_old_bytes(tmp_path: Path) -> None:
    with segwal.open(tmp_path, sync="never") as wal:
        _fill(wal, 3)
        assert wal.read(250).payload == _payload(250)
        assert wal.read(50).payload == _payload(50)
        wal.truncate_after(120)
        wal.append_batch([b"new" * 40] * 200)
        wal.sync()
        assert wal.read(250).payload == b"new" * 40
        assert wal.read(121).payload == b"new" * 40
        assert wal.read(50).payload == _payload(50)


def test_sealed_frames_are_cached_and_let_go_with_their_segment(tmp_path: Path) -> None:
    with segwal.open(tmp_path, sync="never") as wal:
        _fill(wal, 2)
        wal.rotate()
        wal.append_batch([_payload(lsn) for lsn in range(201, 301)])
        wal.sync()
        assert wal.read(10).payload == _payload(10)
        assert wal.read(250).payload == _payload(250)
        assert len(_cache(wal)) == 2
        wal.truncate_before(201)
        assert len(_cache(wal)) == 1  # the retired segment's frame went with it
        assert wal.read(260).payload == _payload(260)


def test_the_cache_stays_within_its_bytes(tmp_path: Path) -> None:
    limit = 40_000  # about three frames of 100 x 96 B
    with segwal.open(tmp_path, sync="never", read_cache_bytes=limit) as wal:
        _fill(wal, 20)
        for lsn in range(1, 2001, 37):
            assert wal.read(lsn).payload == _payload(lsn)
            assert _cache(wal).size <= limit
        assert 0 < len(_cache(wal)) <= 4


def test_a_readonly_view_sees_a_rewind_of_the_writer(tmp_path: Path) -> None:
    with segwal.open(tmp_path, sync="always") as wal:
        _fill(wal, 2)
        with segwal.open(tmp_path, readonly=True) as view:
            assert view.read(150).payload == _payload(150)
            assert view.read(160).payload == _payload(160)
            assert _cache(view).hits == 1
            wal.truncate_after(120)
            wal.append_batch([b"again" * 20] * 80)
            assert view.read(150).payload == b"again" * 20


@pytest.mark.parametrize("codec", ["encrypted", "zstd"])
def test_version_2_frames_are_cached_as_plaintext(tmp_path: Path, codec: str) -> None:
    options: dict[str, object] = (
        {"encryption_key": os.urandom(32)} if codec == "encrypted" else {"compression": "zstd"}
    )
    with segwal.open(tmp_path, sync="never", **options) as wal:  # type: ignore[arg-type]
        _fill(wal, 3)
        assert wal.read(130).payload == _payload(130)
        cached = _cache(wal).find(140, wal._state.rewinds)
        assert cached is not None
        assert cached.blob.find(_payload(140)) >= 0  # the plain body, not the stored one
        assert wal.read(140).payload == _payload(140)
        assert _cache(wal).hits == 2


@pytest.mark.parametrize("value", [-1, 1 << 41, "1", True])
def test_read_cache_bytes_is_checked(tmp_path: Path, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        segwal.open(tmp_path, read_cache_bytes=value)  # type: ignore[arg-type]
    assert info.value.option == "read_cache_bytes"


def test_a_checkpoint_hides_cached_records_below_it(tmp_path: Path) -> None:
    wal = segwal.open(tmp_path, sync="never")
    _fill(wal, 3)
    assert wal.read(50).payload == _payload(50)
    assert wal.read(60).payload == _payload(60)  # cached
    wal.truncate_before(101)  # inside the active segment: its frames stay cached
    with pytest.raises(NotFoundError):
        wal.read(60)
    assert wal.read(160).payload == _payload(160)
    wal.close()
    with pytest.raises(ClosedError):
        wal.read(160)
