"""Recovery on real files: torn tails are cut and reported, corruption is raised with its
place, and the "truncate" mode keeps the valid prefix and moves the rest aside.

Every test starts from a copy of one reference log (seven sealed 1 KiB segments and an
active one of five frames, written with sync="always" so each frame records the previous
LSN as durable) and damages it the way a crash, bit rot or an operator would.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

import segwal
from conftest import forget_clean_close
from helpers_logs import (
    HEADER_SIZE,
    SEAL_SIZE,
    FrameInfo,
    append_bytes,
    assert_prefix,
    build_log,
    copy_log,
    fixed_clock,
    frame_bytes,
    header_seed,
    patch_header,
    payload_for,
    quarantine_files,
    read_frames,
    records_of,
    restore_log,
    segment_files,
    snapshot,
    write_at,
    xor_byte,
)
from segwal import (
    ChecksumError,
    ContinuityError,
    CorruptionError,
    SealError,
    SegmentHeaderError,
)

REF_RECORDS = 66


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, bytes]]:
    directory = tmp_path_factory.mktemp("reference") / "log"
    expected = build_log(directory, records=REF_RECORDS)
    segs = segment_files(directory)
    frames, _ = read_frames(segs[-1])
    # The tests below rely on this shape; fail loudly if the writer ever changes it.
    assert len(segs) == 8
    assert [(f.first_lsn, f.count) for f in frames] == [(60, 1), (61, 3), (64, 1), (65, 1), (66, 1)]
    return directory, expected


@pytest.fixture
def log(reference: tuple[Path, dict[int, bytes]], tmp_path: Path) -> Path:
    return copy_log(reference[0], tmp_path / "log")


@pytest.fixture
def expected(reference: tuple[Path, dict[int, bytes]]) -> dict[int, bytes]:
    return reference[1]


_SNAPSHOTS: dict[Path, dict[str, bytes]] = {}


def fresh(reference: tuple[Path, dict[int, bytes]], root: Path, name: str) -> Path:
    """An undamaged copy of the reference log at ``root / name``, reusing the directory."""
    source = reference[0]
    if source not in _SNAPSHOTS:
        _SNAPSHOTS[source] = snapshot(source)
    return restore_log(root / name, _SNAPSHOTS[source])


def last_frames(log: Path) -> list[FrameInfo]:
    return read_frames(segment_files(log)[-1])[0]


def reopen_and_extend(log: Path, expected: dict[int, bytes], through: int, **kw: object) -> None:
    """After a repair: the kept prefix is intact, the next append gets the next LSN, and a
    second open is clean and agrees."""
    with segwal.open(log, **kw) as wal:  # type: ignore[arg-type]
        assert_prefix(wal, expected, through=through)
        assert wal.append(payload_for(through + 1, salt=9)) == through + 1
    with segwal.open(log) as wal:
        assert wal.recovery.clean, wal.recovery
        assert wal.recovery.cuts == ()
        got = records_of(wal)
        assert wal.last_lsn == through + 1
        assert got[through + 1] == payload_for(through + 1, salt=9)
        assert all(got[lsn] == expected[lsn] for lsn in range(wal.first_lsn, through + 1))


def expect_raise(
    log: Path,
    cls: type[CorruptionError],
    *,
    path: Path,
    offset: int | None,
    lsn: int | None,
    **kw: object,
) -> CorruptionError:
    """Opening raises ``cls`` naming the place, and changes no segment byte."""
    before = snapshot(log)
    with pytest.raises(cls) as info:
        segwal.open(log, **kw)  # type: ignore[arg-type]
    err = info.value
    assert err.path == str(path), err
    assert err.offset == offset, err
    assert err.lsn == lsn, err
    assert str(path) in str(err)
    assert snapshot(log) == before, "a refused open changed the directory"
    return err


# -- torn tails: damage after the last frame ------------------------------------------------


def _partial_frame(log: Path) -> bytes:
    last = segment_files(log)[-1]
    whole = frame_bytes(header_seed(last), REF_RECORDS + 1, [b"x" * 200], durable_lsn=REF_RECORDS)
    return whole[: len(whole) // 2]


def _uncommitted_frame(log: Path) -> bytes:
    # The first frame of a batch whose commit frame never reached the disk.
    last = segment_files(log)[-1]
    return frame_bytes(
        header_seed(last), REF_RECORDS + 1, [b"a", b"b"], durable_lsn=REF_RECORDS, commit=False
    )


TAILS = {
    "one zero": lambda log: b"\0",
    "zeros 4096": lambda log: bytes(4096),
    "garbage 300": lambda log: random.Random(1).randbytes(300),
    "garbage 70000": lambda log: random.Random(2).randbytes(70000),
    "kind byte only": lambda log: b"\0\0\0\0R",
    "seal kind, short": lambda log: b"\0\0\0\0S" + bytes(40),
    "half a frame": _partial_frame,
    "head only": lambda log: _partial_frame(log)[:40],
    "uncommitted frame": _uncommitted_frame,
}


@pytest.mark.parametrize("tail", list(TAILS))
def test_junk_after_last_frame_is_cut(log: Path, expected: dict[int, bytes], tail: str) -> None:
    last = segment_files(log)[-1]
    size = last.stat().st_size
    junk = TAILS[tail](log)
    append_bytes(last, junk)
    with segwal.open(log) as wal:
        report = wal.recovery
        assert len(report.cuts) == 1, report
        cut = report.cuts[0]
        assert (cut.path, cut.offset, cut.length, cut.lsn) == (
            str(last),
            size,
            len(junk),
            REF_RECORDS + 1,
        )
        assert cut.quarantine_path is None
        assert report.torn_tail and not report.clean
        assert report.quarantined == ()
        assert last.stat().st_size == size
        assert_prefix(wal, expected, through=REF_RECORDS)
    assert quarantine_files(log) == []
    reopen_and_extend(log, expected, REF_RECORDS)


def test_truncation_at_every_offset_of_the_tail_is_a_clean_cut(
    reference: tuple[Path, dict[int, bytes]], expected: dict[int, bytes], tmp_path: Path
) -> None:
    """Cut the last segment at every byte inside its batch frame and inside its final
    frame, and one byte either side of every frame boundary: always a torn tail back to the
    last whole frame, never an error."""
    frames = last_frames(reference[0])
    size = segment_files(reference[0])[-1].stat().st_size
    offsets = set(range(frames[1].offset, frames[1].end + 1))
    offsets |= set(range(frames[-1].offset, size))
    for f in frames:
        offsets |= {f.offset - 1, f.offset, f.offset + 1}
    offsets.discard(HEADER_SIZE - 1)  # a short header is never a tear (see test_bad_input)
    checked = 0
    for cut_at in sorted(offsets):
        log = fresh(reference, tmp_path, "log")
        last = segment_files(log)[-1]
        os.truncate(last, cut_at)
        whole = [f for f in frames if f.end <= cut_at]
        keep_to = whole[-1].end if whole else HEADER_SIZE
        through = whole[-1].last_lsn if whole else frames[0].first_lsn - 1
        with segwal.open(log) as wal:
            cuts = wal.recovery.cuts
            if cut_at == keep_to:
                assert cuts == (), cut_at
            else:
                assert len(cuts) == 1, cut_at
                assert (cuts[0].offset, cuts[0].length, cuts[0].lsn) == (
                    keep_to,
                    cut_at - keep_to,
                    through + 1,
                ), cut_at
            assert last.stat().st_size == keep_to
            assert_prefix(wal, expected, through=through)
            if checked % 4 == 0:
                assert wal.append(payload_for(through + 1, salt=9)) == through + 1
                through += 1
        if checked % 4 == 0:
            with segwal.open(log) as wal:
                assert wal.recovery.clean
                assert wal.last_lsn == through
        checked += 1
    assert checked > 250


def test_zeroed_tail_sector_is_a_torn_tail(log: Path, expected: dict[int, bytes]) -> None:
    # The size reached the disk but the last 512-byte piece did not: it reads as zeros.
    last = segment_files(log)[-1]
    frames = last_frames(log)
    size = last.stat().st_size
    start = size - size % 512 if size % 512 else size - 512
    write_at(last, start, bytes(size - start))
    damaged = next(f for f in frames if f.end > start)
    with segwal.open(log) as wal:
        (cut,) = wal.recovery.cuts
        assert (cut.offset, cut.lsn) == (damaged.offset, damaged.first_lsn)
        assert_prefix(wal, expected, through=damaged.first_lsn - 1)


# -- damage inside the last segment ---------------------------------------------------------


@pytest.mark.parametrize("mask", [0x01, 0xFF])
@pytest.mark.parametrize("index", [0, 1, 3])
def test_flip_in_a_frame_followed_by_durable_frames_is_corruption(
    reference: tuple[Path, dict[int, bytes]], tmp_path: Path, index: int, mask: int
) -> None:
    """Every byte of a frame of the last segment that later frames prove durable."""
    frame = last_frames(reference[0])[index]
    for offset in range(frame.offset, frame.end):
        log = fresh(reference, tmp_path, "log")
        last = segment_files(log)[-1]
        xor_byte(last, offset, mask)
        err = expect_raise(
            log, CorruptionError, path=last, offset=frame.offset, lsn=frame.first_lsn
        )
        assert "durable" in err.reason, err
        if offset % 3:
            continue
        report = segwal.verify(log)
        assert not report.ok
        (problem,) = report.problems
        assert (problem.path, problem.offset, problem.lsn, problem.kind) == (
            str(last),
            frame.offset,
            frame.first_lsn,
            "corruption",
        )
        # strict raises the same; truncate is exercised below.
        expect_raise(
            log,
            CorruptionError,
            path=last,
            offset=frame.offset,
            lsn=frame.first_lsn,
            recovery="strict",
        )


@pytest.mark.parametrize("mask", [0x01, 0xFF])
def test_flip_in_the_final_frame_is_a_torn_tail(
    reference: tuple[Path, dict[int, bytes]],
    expected: dict[int, bytes],
    tmp_path: Path,
    mask: int,
) -> None:
    """The documented ambiguity window: the last batch, with nothing valid after it, may be a
    torn write, so damage there is cut even though the record was acknowledged."""
    frame = last_frames(reference[0])[-1]
    for offset in range(frame.offset, frame.end):
        log = fresh(reference, tmp_path, "log")
        last = segment_files(log)[-1]
        xor_byte(last, offset, mask)
        report = segwal.verify(log)
        assert report.ok, report
        (problem,) = report.problems
        assert (problem.offset, problem.lsn, problem.kind) == (
            frame.offset,
            frame.first_lsn,
            "torn_tail",
        )
        with segwal.open(log) as wal:
            (cut,) = wal.recovery.cuts
            assert (cut.offset, cut.length, cut.lsn) == (
                frame.offset,
                frame.length,
                frame.first_lsn,
            )
            assert_prefix(wal, expected, through=frame.first_lsn - 1)


def test_flip_in_active_header_is_corruption(log: Path) -> None:
    # A segment's header is durable before its name exists, so a bad header is never a tear.
    last = segment_files(log)[-1]
    xor_byte(last, 20)
    expect_raise(log, SegmentHeaderError, path=last, offset=0, lsn=60)


# -- damage to sealed segments --------------------------------------------------------------


@pytest.mark.parametrize("segment", [0, 3, 6])
def test_flip_in_a_seal_raises_seal_error(
    reference: tuple[Path, dict[int, bytes]], tmp_path: Path, segment: int
) -> None:
    sealed = segment_files(reference[0])[segment]
    size = sealed.stat().st_size
    first = int(sealed.name[:20])
    for offset in range(size - SEAL_SIZE, size):
        log = fresh(reference, tmp_path, "log")
        path = log / sealed.name
        xor_byte(path, offset, 0x10)
        expect_raise(log, SealError, path=path, offset=size - SEAL_SIZE, lsn=first)
        assert not segwal.verify(log).ok


@pytest.mark.parametrize("change", ["shorter", "longer", "no seal"])
def test_sealed_segment_with_wrong_length_raises_seal_error(log: Path, change: str) -> None:
    path = segment_files(log)[2]
    size = path.stat().st_size
    if change == "shorter":
        os.truncate(path, size - 1)
    elif change == "longer":
        append_bytes(path, bytes(64))
    else:
        os.truncate(path, size - SEAL_SIZE)
    with pytest.raises(SealError) as info:
        segwal.open(log)
    assert info.value.path == str(path)
    assert not segwal.verify(log).ok


def test_flip_in_sealed_payload_is_found_by_verify_read_and_replay(
    log: Path, expected: dict[int, bytes]
) -> None:
    """Opening checks sealed segments by header, seal and chain only: payload damage there
    is not seen at open, but verify reports it and reading the record raises."""
    path = segment_files(log)[2]
    frames, _ = read_frames(path)
    frame = frames[1]
    xor_byte(path, frame.end - 1, 0x04)  # the last payload byte of the frame
    report = segwal.verify(log)
    assert not report.ok
    assert [(p.path, p.offset, p.lsn, p.kind) for p in report.problems] == [
        (str(path), frame.offset, frame.first_lsn, "corruption")
    ]
    bad = [s for s in report.segments if not s.ok]
    assert [(s.path, s.bad_offset) for s in bad] == [(str(path), frame.offset)]
    with segwal.open(log) as wal:
        assert wal.recovery.clean
        assert wal.last_lsn == REF_RECORDS
        with pytest.raises(CorruptionError) as info:
            wal.read(frame.first_lsn)
        err = info.value
        assert isinstance(err, ChecksumError)
        assert (err.path, err.offset) == (str(path), frame.offset)
        # Records before the damage read fine; replay yields them, then raises.
        assert wal.read(frame.first_lsn - 1).payload == expected[frame.first_lsn - 1]
        seen = []
        with pytest.raises(CorruptionError) as info:
            for record in wal.replay():
                seen.append(record.lsn)
        assert seen == list(range(1, frame.first_lsn))
        assert (info.value.offset, info.value.lsn) == (frame.offset, frame.first_lsn)
        # Later segments are untouched and still readable.
        assert wal.read(REF_RECORDS).payload == expected[REF_RECORDS]


def test_damaged_record_read_names_its_lsn(log: Path) -> None:
    path = segment_files(log)[2]
    frame = read_frames(path)[0][1]
    assert frame.first_lsn > int(path.name[:20])
    xor_byte(path, frame.end - 1, 0x04)
    with segwal.open(log) as wal:
        for read in (lambda: wal.read(frame.first_lsn), lambda: list(wal.replay(frame.first_lsn))):
            with pytest.raises(ChecksumError) as info:
                read()
            assert (info.value.offset, info.value.lsn) == (frame.offset, frame.first_lsn)


def test_deleted_middle_segment_is_a_gap(log: Path) -> None:
    segs = segment_files(log)
    segs[3].unlink()
    expect_raise(log, ContinuityError, path=segs[4], offset=0, lsn=int(segs[3].name[:20]))


def test_deleted_last_sealed_segment_is_a_gap(log: Path) -> None:
    segs = segment_files(log)
    segs[-2].unlink()
    expect_raise(log, ContinuityError, path=segs[-1], offset=0, lsn=int(segs[-2].name[:20]))


def _lsn_name(lsn: int) -> str:
    return f"{lsn:020d}.wal"


def test_segment_duplicated_under_another_name(log: Path) -> None:
    segs = segment_files(log)
    first = int(segs[2].name[:20])
    dup = log / _lsn_name(first + 1)
    shutil.copyfile(segs[2], dup)
    err = expect_raise(log, SegmentHeaderError, path=dup, offset=0, lsn=first + 1)
    assert "name" in err.reason


def test_segment_renamed_to_another_lsn(log: Path) -> None:
    segs = segment_files(log)
    first = int(segs[3].name[:20])
    moved = log / _lsn_name(first + 1)
    segs[3].rename(moved)
    expect_raise(log, SegmentHeaderError, path=moved, offset=0, lsn=first + 1)


def test_segment_overwritten_by_a_copy_of_another(log: Path) -> None:
    segs = segment_files(log)
    shutil.copyfile(segs[2], segs[3])
    expect_raise(log, SegmentHeaderError, path=segs[3], offset=0, lsn=int(segs[3].name[:20]))


def test_two_segments_swapped(log: Path) -> None:
    segs = segment_files(log)
    a, b = segs[2].read_bytes(), segs[5].read_bytes()
    segs[2].write_bytes(b)
    segs[5].write_bytes(a)
    expect_raise(log, SegmentHeaderError, path=segs[2], offset=0, lsn=int(segs[2].name[:20]))


@pytest.mark.parametrize("which", [3, -1])
def test_segment_from_another_log(log: Path, tmp_path: Path, which: int) -> None:
    # The same workload in another directory: identical LSN ranges and names, another log id.
    other = tmp_path / "other"
    build_log(other, records=REF_RECORDS)
    mine, theirs = segment_files(log), segment_files(other)
    assert [p.name for p in mine] == [p.name for p in theirs]
    shutil.copyfile(theirs[which], mine[which])
    prev_last = int(mine[which].name[:20]) - 1
    err = expect_raise(log, ContinuityError, path=mine[which], offset=0, lsn=prev_last + 1)
    assert "another log" in err.reason


@pytest.mark.parametrize(
    "field",
    [
        {"prev_digest": b"\x01" * 32},
        {"sequence": 99},
        {"log_id": b"\x07" * 16},
    ],
    ids=["digest", "sequence", "log_id"],
)
def test_header_chain_fields(log: Path, field: dict[str, int | bytes]) -> None:
    segs = segment_files(log)
    patch_header(segs[4], **field)
    expect_raise(log, ContinuityError, path=segs[4], offset=0, lsn=int(segs[4].name[:20]))


def test_stale_copy_of_a_segment(tmp_path: Path) -> None:
    """An old copy of a segment, taken while it was active, put back after it was sealed."""
    log = tmp_path / "log"
    with segwal.open(log, segment_bytes=1024, clock=fixed_clock()) as wal:
        for lsn in range(1, 4):
            wal.append(payload_for(lsn))
        active = Path(wal.segments()[-1].path)
        stale = active.read_bytes()
        for lsn in range(4, 40):
            wal.append(payload_for(lsn))
        assert len(wal.segments()) > 2
    active.write_bytes(stale)
    with pytest.raises(SealError) as info:
        segwal.open(log)
    assert info.value.path == str(active)
    report = segwal.verify(log)
    assert not report.ok
    assert report.problems[0].path == str(active)


# -- recovery modes -------------------------------------------------------------------------


def test_strict_refuses_a_torn_tail(log: Path) -> None:
    last = segment_files(log)[-1]
    size = last.stat().st_size
    append_bytes(last, bytes(100))
    err = expect_raise(
        log, CorruptionError, path=last, offset=size, lsn=REF_RECORDS + 1, recovery="strict"
    )
    assert "torn tail" in str(err)
    # The default mode then cuts it.
    with segwal.open(log) as wal:
        assert len(wal.recovery.cuts) == 1


def test_strict_opens_a_clean_log(log: Path, expected: dict[int, bytes]) -> None:
    with segwal.open(log, recovery="strict") as wal:
        assert wal.recovery.clean
        assert_prefix(wal, expected, through=REF_RECORDS)


def test_truncate_keeps_prefix_and_quarantines_the_rest_of_the_last_segment(
    log: Path, expected: dict[int, bytes]
) -> None:
    last = segment_files(log)[-1]
    frame = last_frames(log)[2]
    original = last.read_bytes()
    xor_byte(last, frame.offset + 45)
    damaged = last.read_bytes()
    with segwal.open(log, recovery="truncate") as wal:
        report = wal.recovery
        (cut,) = report.cuts
        assert (cut.path, cut.offset, cut.length, cut.lsn) == (
            str(last),
            frame.offset,
            len(original) - frame.offset,
            frame.first_lsn,
        )
        assert cut.quarantine_path is not None
        assert cut.quarantine_path.endswith(".quarantine")
        assert Path(cut.quarantine_path).read_bytes() == damaged[frame.offset :]
        assert last.read_bytes() == original[: frame.offset]
        assert not report.clean
        assert_prefix(wal, expected, through=frame.first_lsn - 1)
        assert wal.append(payload_for(frame.first_lsn, salt=9)) == frame.first_lsn
    # The quarantine copy is never deleted, not even by later opens.
    with segwal.open(log, recovery="truncate") as wal:
        assert wal.recovery.clean
        assert wal.last_lsn == frame.first_lsn
    assert [p.name for p in quarantine_files(log)] == [Path(cut.quarantine_path).name]


def test_truncate_twice_uses_a_new_quarantine_name(log: Path) -> None:
    last = segment_files(log)[-1]
    xor_byte(last, last_frames(log)[3].offset + 1)
    with segwal.open(log, recovery="truncate") as wal:
        first_q = wal.recovery.cuts[0].quarantine_path
        for lsn in range(wal.last_lsn + 1, wal.last_lsn + 4):
            wal.append(payload_for(lsn))
    frames = last_frames(log)
    xor_byte(last, frames[-2].offset + 1)
    with segwal.open(log, recovery="truncate") as wal:
        second_q = wal.recovery.cuts[0].quarantine_path
        assert wal.last_lsn == frames[-2].first_lsn - 1
    assert first_q != second_q
    assert first_q is not None and second_q is not None
    assert Path(first_q).exists() and Path(second_q).exists()


def test_truncate_after_bad_seal_quarantines_later_segments(
    log: Path, expected: dict[int, bytes]
) -> None:
    segs = segment_files(log)
    originals = {p.name: p.read_bytes() for p in segs}
    bad = segs[3]
    size = bad.stat().st_size
    xor_byte(bad, size - 60)
    with segwal.open(log, recovery="truncate") as wal:
        report = wal.recovery
        later = segs[4:]
        assert len(report.quarantined) == len(later)
        for q in report.quarantined:
            assert q.endswith(".quarantine")
        by_source = {Path(q).name.split(".wal.")[0] + ".wal": Path(q) for q in report.quarantined}
        assert sorted(by_source) == [p.name for p in later]
        for name, q in by_source.items():
            assert q.read_bytes() == originals[name], name
        (cut,) = report.cuts
        assert (cut.path, cut.offset, cut.length) == (str(bad), size - SEAL_SIZE, SEAL_SIZE)
        through = int(segs[4].name[:20]) - 1
        assert_prefix(wal, expected, through=through)
    reopen_and_extend(log, expected, through)
    assert segwal.verify(log).ok


def test_bad_seal_cut_names_the_lsn_expected_at_its_offset(log: Path) -> None:
    segs = segment_files(log)
    xor_byte(segs[3], segs[3].stat().st_size - 60)
    with segwal.open(log, recovery="truncate") as wal:
        (cut,) = wal.recovery.cuts
        assert cut.lsn == int(segs[4].name[:20])


def test_truncate_after_gap_quarantines_from_the_gap(log: Path, expected: dict[int, bytes]) -> None:
    segs = segment_files(log)
    segs[3].unlink()
    with segwal.open(log, recovery="truncate") as wal:
        report = wal.recovery
        assert len(report.quarantined) == len(segs) - 4
        assert report.cuts == ()
        through = int(segs[3].name[:20]) - 1
        assert_prefix(wal, expected, through=through)
    reopen_and_extend(log, expected, through)


def test_truncate_with_bad_first_header_keeps_nothing(log: Path) -> None:
    segs = segment_files(log)
    xor_byte(segs[0], 0)
    with segwal.open(log, recovery="truncate") as wal:
        assert len(wal.recovery.quarantined) == len(segs)
        assert wal.last_lsn == 0
        assert wal.append(b"new") == 1
    assert len(quarantine_files(log)) == len(segs)


# -- the rest of the directory --------------------------------------------------------------


@pytest.mark.parametrize("content", ["junk", "header"])
def test_leftover_temp_file_is_removed_and_reported(
    log: Path, expected: dict[int, bytes], content: str
) -> None:
    temp = log / (_lsn_name(REF_RECORDS + 1) + ".tmp")
    if content == "junk":
        temp.write_bytes(b"partial")
    else:
        # A crash after the header was written but before the rename.
        temp.write_bytes(segment_files(log)[-1].read_bytes()[:128])
    with segwal.open(log) as wal:
        assert wal.recovery.removed_temp_files == (str(temp),)
        assert wal.recovery.clean
        assert_prefix(wal, expected, through=REF_RECORDS)
    assert not temp.exists()


def test_foreign_files_are_ignored_and_reported(log: Path, expected: dict[int, bytes]) -> None:
    names = ["README", "00000000000000000001.wal.bak", "1.wal", "notes.txt.tmp"]
    for name in names:
        (log / name).write_bytes(b"not mine")
    (log / "subdir").mkdir()
    with segwal.open(log) as wal:
        report = wal.recovery
        assert sorted(report.foreign_files) == sorted(str(log / n) for n in [*names, "subdir"])
        assert report.clean
        assert_prefix(wal, expected, through=REF_RECORDS)
        wal.append(b"more")
    for name in names:
        assert (log / name).read_bytes() == b"not mine"
    assert segwal.verify(log).ok


def test_sealed_last_segment_gets_a_new_active_segment(tmp_path: Path) -> None:
    """A crash between sealing a segment and creating the next one."""
    log = tmp_path / "log"
    with segwal.open(log, segment_bytes=1024) as wal:
        for lsn in range(1, 6):
            wal.append(payload_for(lsn))
        wal.rotate()
        new_active = Path(wal.segments()[-1].path)
    new_active.unlink()
    with segwal.open(log, segment_bytes=1024) as wal:
        report = wal.recovery
        assert report.sealed_tail and report.clean
        assert wal.last_lsn == 5
        segs = wal.segments()
        assert [s.sealed for s in segs] == [True, False]
        assert segs[-1].first_lsn == 6
        assert wal.append(payload_for(6)) == 6
    with segwal.open(log) as wal:
        assert not wal.recovery.sealed_tail
        assert records_of(wal) == {lsn: payload_for(lsn) for lsn in range(1, 7)}


# -- sync="never": damage in the unsynced region --------------------------------------------


def _never_log(log: Path) -> tuple[int, list[FrameInfo]]:
    """A log written with sync="never": LSNs 1..20 synced, 21..80 written after the sync."""
    with segwal.open(log, sync="never", segment_bytes=1 << 20, clock=fixed_clock()) as wal:
        for lsn in range(1, 21):
            wal.append(payload_for(lsn))
        synced = wal.sync()
        assert synced == 20
        for lsn in range(21, 81, 4):
            wal.append_batch([payload_for(lsn + i) for i in range(4)])
    forget_clean_close(log)  # as a killed writer leaves it: the tests tear its tail
    frames, _ = read_frames(segment_files(log)[-1])
    return synced, frames


def test_never_mode_tear_inside_unsynced_batches_is_a_torn_tail(tmp_path: Path) -> None:
    log = tmp_path / "log"
    synced, frames = _never_log(log)
    unsynced = [f for f in frames if f.first_lsn > synced]
    assert all(f.durable_lsn == synced for f in unsynced)
    first_unsynced = unsynced[0].offset
    start = (first_unsynced // 512 + 2) * 512  # a 512-byte piece inside the unsynced region
    last = segment_files(log)[-1]
    assert start + 512 < frames[-2].offset, "later unsynced frames must survive"
    write_at(last, start, bytes(512))
    damaged = next(f for f in frames if f.end > start)
    size = last.stat().st_size
    report = segwal.verify(log)
    assert report.ok
    assert [p.kind for p in report.problems] == ["torn_tail"]
    with segwal.open(log) as wal:
        (cut,) = wal.recovery.cuts
        assert (cut.offset, cut.lsn) == (damaged.offset, damaged.first_lsn)
        assert cut.length == size - damaged.offset
        through = damaged.first_lsn - 1
        assert records_of(wal) == {lsn: payload_for(lsn) for lsn in range(1, through + 1)}
        assert wal.append(b"next") == through + 1
    with segwal.open(log) as wal:
        assert wal.recovery.clean


def test_never_mode_damage_before_the_sync_is_corruption(tmp_path: Path) -> None:
    log = tmp_path / "log"
    _synced, frames = _never_log(log)
    target = next(f for f in frames if f.first_lsn == 10)
    last = segment_files(log)[-1]
    write_at(last, target.offset + 10, bytes(8))
    expect_raise(log, CorruptionError, path=last, offset=target.offset, lsn=10)
