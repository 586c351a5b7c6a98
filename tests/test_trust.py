"""Issue 13, "no silent loss anywhere": each finding pinned by a test that failed before
its fix. The bad-input table (tests/test_bad_input.py) holds the many variants of each
family; the tests here pin the reported scenario itself, end to end."""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

import segwal
from helpers_logs import build_log, patch_header, segment_files
from segwal import ContinuityError, CorruptionError, NotRegularFileError
from segwal.format.layout import crc32c
from segwal.storage.index import CheckedIndex, SparseIndex
from segwal.storage.index import load as load_index
from segwal.testing import MemoryFileSystem

# -- finding 2: a lost first segment -------------------------------------------------------


def test_lost_first_segment_without_meta_is_not_a_clean_log(tmp_path: Path) -> None:
    log = tmp_path / "log"
    build_log(log)
    assert not (log / "META").exists()
    segment_files(log)[0].unlink()
    with pytest.raises(ContinuityError) as info:
        segwal.open(log)
    assert info.value.path is not None and info.value.path.endswith(".wal")
    report = segwal.verify(log)
    assert not report.ok
    assert "segments are missing" in report.problems[0].reason


def test_first_segment_renamed_to_lsn_1_is_caught_by_its_sequence(tmp_path: Path) -> None:
    """A later segment renamed into the first one's place (and its header patched to match
    the name) still names a predecessor: no META means nothing may precede it."""
    log = tmp_path / "log"
    build_log(log)
    first, second = segment_files(log)[:2]
    first.unlink()
    patch_header(second, first_lsn=1)  # the header agrees with its new name
    second.rename(log / f"{1:020d}.wal")
    with pytest.raises(CorruptionError):
        segwal.open(log)
    assert not segwal.verify(log).ok


def test_truncated_log_keeps_opening_and_verifying(tmp_path: Path) -> None:
    """A log that starts past LSN 1 carries a META that says so: still valid."""
    log = tmp_path / "log"
    build_log(log)
    with segwal.open(log) as wal:
        first_kept = wal.segments()[2].first_lsn
        wal.truncate_before(first_kept)
        assert (log / "META").exists()
        assert wal.segments()[0].first_lsn > 1
    with segwal.open(log) as wal:
        assert wal.recovery.clean and wal.first_lsn == first_kept
    assert segwal.verify(log).ok


def test_verify_compares_the_first_segment_with_meta(tmp_path: Path) -> None:
    log = tmp_path / "log"
    build_log(log)
    with segwal.open(log) as wal:
        wal.truncate_before(wal.segments()[2].first_lsn)
    segment_files(log)[0].unlink()  # now the log starts after its checkpoint
    with pytest.raises(ContinuityError):
        segwal.open(log)
    report = segwal.verify(log)
    assert not report.ok and "checkpoint" in report.problems[0].reason


def test_verify_reads_meta_a_flipped_byte_is_a_problem(tmp_path: Path) -> None:
    log = tmp_path / "log"
    build_log(log)
    with segwal.open(log) as wal:
        wal.hold("backup", 3)
    data = bytearray((log / "META").read_bytes())
    data[-3] ^= 0x01
    (log / "META").write_bytes(bytes(data))
    with pytest.raises(CorruptionError):
        segwal.open(log)
    report = segwal.verify(log)
    assert not report.ok
    assert report.problems[0].path.endswith("META")


# -- finding 7: META fields out of range -----------------------------------------------------


def forge_meta(log: Path, body: object) -> None:
    raw = json.dumps(body).encode()
    (log / "META").write_bytes(struct.pack("<8sII", b"SWMETA01", len(raw), crc32c(raw)) + raw)


def test_meta_truncate_after_negative_deletes_nothing(tmp_path: Path) -> None:
    log = tmp_path / "log"
    build_log(log)
    forge_meta(log, {"first_lsn": 1, "holds": {}, "truncate_after": -5})
    before = sorted(p.name for p in log.iterdir())
    with pytest.raises(CorruptionError) as info:
        segwal.open(log)
    assert info.value.path is not None and info.value.path.endswith("META")
    assert "truncate_after" in info.value.reason
    assert sorted(p.name for p in log.iterdir()) == before
    assert not segwal.verify(log).ok


# -- finding 11: foreign file types under segwal's names ------------------------------------


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", ["META", "LOCK", "cursor.x"])
def test_fifo_under_a_segwal_name_never_hangs(tmp_path: Path, name: str) -> None:
    log = tmp_path / "log"
    build_log(log, records=10)
    if name == "LOCK":
        (log / "LOCK").unlink()
    os.mkfifo(log / name)
    with pytest.raises(NotRegularFileError) as info, segwal.open(log) as wal:
        wal.apply_retention()  # reads the cursors
    assert info.value.path.endswith(name)


@pytest.mark.timeout(20)
def test_socket_named_meta_is_a_typed_error(tmp_path: Path) -> None:
    log = tmp_path / "log"
    build_log(log, records=10)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(log / "META"))
        with pytest.raises(segwal.StorageError) as info:
            segwal.open(log)
    assert info.value.path.endswith("META")


# -- finding 12: cursor files in verify, temp leftovers at open ------------------------------


def test_verify_reports_a_damaged_cursor_file(tmp_path: Path) -> None:
    log = tmp_path / "log"
    build_log(log, records=10)
    with segwal.open(log) as wal:
        wal.cursor("reader").commit(3)
    assert segwal.verify(log).ok
    data = bytearray((log / "cursor.reader").read_bytes())
    data[9] ^= 0x40
    (log / "cursor.reader").write_bytes(bytes(data))
    report = segwal.verify(log)
    assert not report.ok
    assert [p.path for p in report.problems] == [str(log / "cursor.reader")]


@pytest.fixture(params=["os", "memory"])
def fs_and_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[object, str]]:
    if request.param == "os":
        yield segwal.OsFileSystem(), str(tmp_path / "log")
    else:
        yield MemoryFileSystem(), "/log"


def test_leftover_cursor_and_meta_temp_files_are_removed_at_open(
    fs_and_dir: tuple[segwal.FileSystem, str],
) -> None:
    fs, directory = fs_and_dir
    with segwal.open(directory, filesystem=fs) as wal:
        wal.append(b"one")
    for name in ("cursor.reader.4242.tmp", "META.tmp"):
        handle = fs.create(f"{directory}/{name}")
        handle.pwrite(b"half", 0)
        handle.close()
    with segwal.open(directory, filesystem=fs) as wal:
        removed = sorted(p.rsplit("/", 1)[1] for p in wal.recovery.removed_temp_files)
    assert removed == ["META.tmp", "cursor.reader.4242.tmp"]
    names = {e.name for e in fs.list_dir(directory)}
    assert not {"META.tmp", "cursor.reader.4242.tmp"} & names


# -- finding 8: index sidecars are checked against the frame heads before they are used ----


def _sealed_log(tmp_path: Path) -> tuple[Path, list[segwal.SegmentInfo], dict[int, bytes]]:
    log = tmp_path / "log"
    expected: dict[int, bytes] = {}
    with segwal.open(log, segment_bytes=64 << 10, sync="never") as wal:
        while wal.next_lsn < 3000:
            lsn = wal.next_lsn
            expected[lsn] = f"record {lsn} ".encode() * (1 + lsn % 7)
            wal.append(expected[lsn])
        sealed = [s for s in wal.segments() if s.sealed]
    return log, sealed, expected


def _load(info: segwal.SegmentInfo) -> SparseIndex:
    from segwal.format.layout import SEAL_SIZE

    end = info.size_bytes - SEAL_SIZE
    return load_index(segwal.OsFileSystem(), info.path, bytes.fromhex(info.digest), end)


def test_a_genuine_sidecar_passes_its_check_without_a_rebuild(tmp_path: Path) -> None:
    _log, sealed, _expected = _sealed_log(tmp_path)
    for info in sealed:
        index = _load(info)
        assert isinstance(index, CheckedIndex)
        written = (list(index.lsns), list(index.offsets), list(index.stamps))
        index.seek_lsn(info.last_lsn, info.first_lsn)  # checks every entry
        assert not index.rebuilt
        assert (index.lsns, index.offsets, index.stamps) == written


def test_a_sidecar_with_shifted_lsns_is_rebuilt_and_reads_stay_right(tmp_path: Path) -> None:
    log, sealed, expected = _sealed_log(tmp_path)
    for info in sealed:
        index = _load(info)
        shifted = SparseIndex(index.interval)
        for lsn, offset, stamp in zip(index.lsns, index.offsets, index.stamps, strict=True):
            shifted.lsns.append(lsn if offset == 128 else lsn + 1)
            shifted.offsets.append(offset)
            shifted.stamps.append(stamp)
        Path(info.path + ".idx").write_bytes(shifted.encode(bytes.fromhex(info.digest)))
        again = _load(info)
        again.seek_lsn(info.last_lsn, info.first_lsn)
        assert isinstance(again, CheckedIndex) and again.rebuilt
    with segwal.open(log, readonly=True) as wal:
        for lsn in range(1, sealed[-1].last_lsn + 1, 7):  # never a false CorruptionError
            assert wal.read(lsn).payload == expected[lsn]


def test_truncate_mode_restarting_past_lsn_1_stores_meta(tmp_path: Path) -> None:
    """No META, and the only segment (named after LSN 1) is unreadable: "truncate" moves it
    aside and restarts at its LSN, so it must store META first, or the next open would find
    a log without META that does not start at LSN 1 (a fuzz finding on this branch)."""
    log = tmp_path / "log"
    log.mkdir()
    (log / f"{52:020d}.wal").write_bytes(b"\x89SEGWAL\n" + bytes(300))
    with segwal.open(log, recovery="truncate") as wal:
        assert wal.recovery.quarantined
        assert wal.append(b"after") == 52
    with segwal.open(log) as wal:
        assert (wal.first_lsn, wal.last_lsn) == (52, 52)
    assert segwal.verify(log).ok
