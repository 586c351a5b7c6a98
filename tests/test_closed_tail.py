"""The writer's open after a clean close takes the active segment from META's mark, the
facts beside it and the index sidecar the close saved, instead of scanning it (issue 15,
replay-1KiB-cold); whatever could make those stale sends it back to the scan."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import segwal
from helpers_logs import segment_files, xor_byte
from segwal.format.layout import crc32c
from segwal.format.meta import HEAD, MAGIC
from segwal.format.meta import decode as decode_meta
from segwal.storage.fileio import OsFileSystem
from segwal.storage.recovery import SegmentState, closed_tail, plan


def _tails(path: Path) -> tuple[SegmentState | None, SegmentState]:
    """The last segment as the trusting open takes it (None: it would scan) and as a scan
    finds it."""
    fs = OsFileSystem()
    scanned = plan(fs, str(path)).segments[-1]
    meta = decode_meta((path / "META").read_bytes(), "META")
    trusted = closed_tail(fs, meta, scanned.path, scanned.header, scanned.size)
    return trusted, scanned


def _same(trusted: SegmentState, scanned: SegmentState) -> None:
    assert (trusted.end, trusted.last_lsn, trusted.min_ts, trusted.max_ts) == (
        scanned.end,
        scanned.last_lsn,
        scanned.min_ts,
        scanned.max_ts,
    )
    assert trusted.index is not None and scanned.index is not None
    assert trusted.index.lsns == scanned.index.lsns
    assert trusted.index.offsets == scanned.index.offsets
    assert trusted.index.stamps == scanned.index.stamps


def _write(path: Path, records: int, *, batch: int = 1, **options: object) -> None:
    with segwal.open(path, sync="never", **options) as wal:  # type: ignore[arg-type]
        for i in range(0, records, batch):
            wal.append_batch([b"record %06d " % (i + j) * 20 for j in range(batch)])


@pytest.mark.parametrize(
    ("records", "batch", "options"),
    [
        (3000, 1, {}),
        (2996, 7, {}),
        (2000, 5, {"compression": "zstd"}),
        (500, 1, {"segment_bytes": 1 << 16}),
    ],
)
def test_the_trusting_open_finds_what_the_scan_finds(
    tmp_path: Path, records: int, batch: int, options: dict[str, object]
) -> None:
    path = tmp_path / "log"
    _write(path, records, batch=batch, **options)
    trusted, scanned = _tails(path)
    assert trusted is not None
    _same(trusted, scanned)
    with segwal.open(path) as wal:
        assert wal.last_lsn == records
        assert [r.lsn for r in wal.replay(1)] == list(range(1, records + 1))
        wal.append(b"more")  # the writer resumes from the trusted index and end
        assert wal.lsn_at(scanned.max_ts + 1) == records + 1
    trusted, scanned = _tails(path)
    assert trusted is not None and scanned.last_lsn == records + 1
    _same(trusted, scanned)


def test_an_empty_active_segment(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with segwal.open(path) as wal:
        wal.append(b"one")
        wal.rotate()
    trusted, scanned = _tails(path)
    assert trusted is not None and trusted.last_lsn == 1 and trusted.end == scanned.end
    _same(trusted, scanned)
    with segwal.open(path) as wal:
        assert wal.append(b"two") == 2


def test_appends_after_the_reopen_make_the_open_scan(tmp_path: Path) -> None:
    path = tmp_path / "log"
    _write(path, 100)
    crash = tmp_path / "crash"
    with segwal.open(path, sync="never") as wal:
        wal.append(b"after the reopen")
        wal.sync()
        shutil.copytree(path, crash)  # killed here: META still holds the old mark
    trusted, scanned = _tails(crash)
    assert trusted is None and scanned.last_lsn == 101
    with segwal.open(crash) as wal:
        assert wal.last_lsn == 101


def test_a_rotation_after_the_reopen_makes_the_open_scan(tmp_path: Path) -> None:
    path = tmp_path / "log"
    _write(path, 100)
    crash = tmp_path / "crash"
    with segwal.open(path, sync="never") as wal:
        wal.rotate()
        shutil.copytree(path, crash)
    trusted, _ = _tails(crash)
    assert trusted is None  # the mark names a segment that is no longer the last
    with segwal.open(crash) as wal:
        assert wal.last_lsn == 100


def test_a_sidecar_from_an_earlier_close_is_not_taken(tmp_path: Path) -> None:
    """A rewind, then appends of the same sizes: the segment ends where the old mark said,
    at the same LSN, with other records. The sidecar of the first close must not serve the
    second (as if the second close's sidecar never reached the disk)."""
    path = tmp_path / "log"
    _write(path, 100)
    sidecar = segment_files(path)[-1].with_name(segment_files(path)[-1].name + ".idx")
    first = sidecar.read_bytes()
    with segwal.open(path) as wal:
        wal.truncate_after(90)
        for i in range(90, 100):
            wal.append(b"RECORD %06d " % i * 20)
    sidecar.write_bytes(first)
    trusted, scanned = _tails(path)
    assert trusted is None and scanned.last_lsn == 100
    with segwal.open(path) as wal:
        assert wal.read(95).payload.startswith(b"RECORD")


@pytest.mark.parametrize("damage", ["missing", "flipped", "short"])
def test_a_damaged_sidecar_makes_the_open_scan(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "log"
    _write(path, 2000)
    sidecar = segment_files(path)[-1].with_name(segment_files(path)[-1].name + ".idx")
    if damage == "missing":
        sidecar.unlink()
    elif damage == "flipped":
        xor_byte(sidecar, 60, 0x01)
    else:
        sidecar.write_bytes(sidecar.read_bytes()[:-30])
    trusted, _ = _tails(path)
    assert trusted is None
    with segwal.open(path) as wal:
        assert wal.last_lsn == 2000 and wal.read(1234).lsn == 1234


def test_a_preallocated_segment_is_always_scanned(tmp_path: Path) -> None:
    path = tmp_path / "log"
    _write(path, 100, preallocate=True)
    assert decode_meta((path / "META").read_bytes(), "META").tail is None
    with segwal.open(path, preallocate=True) as wal:
        assert wal.last_lsn == 100


@pytest.mark.parametrize(
    "tail",
    [
        '"x"',
        '["00", 1, 2]',
        '["' + "g" * 32 + '", 1, 2]',
        '["' + "a" * 32 + '", -1, 2]',
        '["' + "a" * 32 + '", 1, true]',
        '["' + "a" * 32 + '", 1]',
    ],
)
def test_bad_facts_are_a_damaged_meta(tmp_path: Path, tail: str) -> None:
    path = tmp_path / "log"
    _write(path, 10)
    body = json.loads((path / "META").read_bytes()[HEAD.size :])
    body["closed_tail"] = json.loads(tail)
    raw = json.dumps(body).encode()
    (path / "META").write_bytes(HEAD.pack(MAGIC, len(raw), crc32c(raw)) + raw)
    with pytest.raises(segwal.CorruptionError, match="META"):
        segwal.open(path)


def test_facts_without_a_mark_are_a_damaged_meta(tmp_path: Path) -> None:
    path = tmp_path / "log"
    _write(path, 10)
    body = json.loads((path / "META").read_bytes()[HEAD.size :])
    del body["closed"]
    raw = json.dumps(body).encode()
    (path / "META").write_bytes(HEAD.pack(MAGIC, len(raw), crc32c(raw)) + raw)
    with pytest.raises(segwal.CorruptionError, match="closed_tail without closed"):
        segwal.open(path)


def test_the_mark_stays_a_triple_for_older_versions(tmp_path: Path) -> None:
    """Older versions reject a ``closed`` that is not [segment, end, lsn] and ignore keys
    they do not know: the facts go in a key of their own."""
    path = tmp_path / "log"
    _write(path, 10)
    body = json.loads((path / "META").read_bytes()[HEAD.size :])
    assert len(body["closed"]) == 3 and len(body["closed_tail"]) == 3


def test_a_forged_sidecar_is_checked_before_a_seek_uses_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Whole is not right (docs/FORMAT.md, "Index sidecar"): a sidecar with this close's
    token whose entry points into a payload is caught by the entry check, the index is
    rebuilt, and the entries the writer added since the open are kept."""
    from segwal.storage.index import SparseIndex, save_tail

    path = tmp_path / "log"
    _write(path, 2000)
    meta = decode_meta((path / "META").read_bytes(), "META")
    assert meta.closed is not None and meta.tail is not None
    trusted, _ = _tails(path)
    assert trusted is not None and trusted.index is not None
    forged = SparseIndex()
    forged.lsns, forged.offsets, forged.stamps = (
        list(trusted.index.lsns),
        list(trusted.index.offsets),
        list(trusted.index.stamps),
    )
    forged.offsets[10] += 24  # inside the batch that entry names: not a batch start
    segment = segment_files(path)[-1]
    fs = OsFileSystem()
    save_tail(fs, str(segment), forged, meta.tail.token, meta.closed.end, meta.closed.lsn)
    assert _tails(path)[0] is not None  # whole, and this close's: taken
    with segwal.open(path) as wal:
        for i in range(2000, 2500):
            wal.append(b"record %06d " % i * 20)
        with caplog.at_level("WARNING", logger="segwal"):
            assert wal.read(1500).payload == b"record 001499 " * 20
        assert "disagrees with the segment" in caplog.text
        assert wal.read(2400).payload == b"record 002399 " * 20
        assert [r.lsn for r in wal.replay(1)] == list(range(1, 2501))
    _, scanned = _tails(path)
    assert scanned.last_lsn == 2500


@pytest.mark.parametrize("lsn", ["below", "empty"])
def test_a_mark_whose_lsn_disagrees_with_the_segment_is_not_trusted(
    tmp_path: Path, lsn: str
) -> None:
    """A mark at the file's end whose LSN cannot be the segment's (before its first LSN, or
    a segment with records marked as holding none) sends the open to the scan."""
    path = tmp_path / "log"
    _write(path, 30, segment_bytes=1 << 12)
    trusted, scanned = _tails(path)
    assert trusted is not None and scanned.header.first_lsn > 2
    body = json.loads((path / "META").read_bytes()[HEAD.size :])
    first = scanned.header.first_lsn
    body["closed"][2] = first - 2 if lsn == "below" else first - 1
    raw = json.dumps(body).encode()
    (path / "META").write_bytes(HEAD.pack(MAGIC, len(raw), crc32c(raw)) + raw)
    trusted, _ = _tails(path)
    assert trusted is None
