"""Recovery planning, branch by branch: what ``recovery.plan`` keeps, sets aside and names as
damage for each shape of directory it can meet, including the paths a readonly view takes
when it looks again with what an earlier plan found (``known``).

The logs are written directly with the format's encoders (``craft_log``: no fsyncs, so each
test builds its own in milliseconds) and then damaged or extended byte by byte. The default
shape is three segments of two records each: ``1.wal`` (LSNs 1-2, sealed), ``3.wal`` (3-4,
sealed) and the active ``5.wal`` (5-6), every frame recording the previous LSN as durable.

The last section covers guards of ``segwal.format.layout`` that the format tests do not reach.
"""

from __future__ import annotations

import os
import shutil
from array import array
from pathlib import Path

import blake3
import pytest

import segwal
from helpers_logs import (
    HEADER_SIZE,
    SEAL_SIZE,
    T0,
    append_bytes,
    craft_log,
    frame_bytes,
    header_seed,
    patch_header,
    payload_for,
    read_frames,
    segment_files,
    xor_byte,
)
from helpers_logs import FrameInfo as FrameInfoType
from segwal import ContinuityError, CorruptionError, SealError, SegmentHeaderError
from segwal.format.framing import encode_frames, max_frame_bytes
from segwal.format.layout import (
    MAX_LSN,
    FormatError,
    decode_header,
    decode_seal,
    encode_header,
    encode_seal,
)
from segwal.format.meta import Closed, Meta
from segwal.format.meta import encode as encode_meta
from segwal.format.scanner import check
from segwal.storage.fileio import OsFileSystem
from segwal.storage.recovery import Damage, Plan, SegmentState, plan
from segwal.storage.tailscan import SEARCH_WINDOW

FS = OsFileSystem()
LOG_ID = b"\x42" * 16
OTHER_ID = b"\x43" * 16


# -- helpers --------------------------------------------------------------------------------


def crafted(root: Path, *, log_id: bytes = LOG_ID) -> Path:
    """The default shape (see the module docstring) in ``root / "log"``."""
    directory = root / "log"
    craft_log(directory, segments=3, records_per_segment=2, log_id=log_id)
    return directory


def seg(directory: Path, first_lsn: int) -> Path:
    return directory / f"{first_lsn:020d}.wal"


def look(directory: Path, known: dict[str, SegmentState] | None = None) -> Plan:
    return plan(FS, str(directory), known)


def known_of(found: Plan) -> dict[str, SegmentState]:
    """What a readonly view hands to its next look: every segment the last plan kept."""
    return {s.path: s for s in found.segments}


def frame_for(
    path: Path, lsn: int, *, durable: int, payload: bytes | None = None, commit: bool = True
) -> bytes:
    """A valid one-record frame for the segment at ``path`` (its seed), stamped T0 + lsn."""
    return frame_bytes(
        header_seed(path),
        lsn,
        [payload_for(lsn) if payload is None else payload],
        durable_lsn=durable,
        commit=commit,
        timestamp_us=T0 + lsn,
    )


def seal_for(
    path: Path,
    *,
    first: int,
    last: int,
    data_end: int | None = None,
    digest: bytes | None = None,
) -> bytes:
    """A seal that decodes for the segment at ``path``; by default it is the right seal
    for the file as it is now (data end at the current size, digest of every byte)."""
    data = path.read_bytes()
    end = len(data) if data_end is None else data_end
    return encode_seal(
        seed=decode_header(data[:HEADER_SIZE]).seed,
        first_lsn=first,
        last_lsn=last,
        count=last - first + 1,
        min_ts=T0 + first,
        max_ts=T0 + last,
        data_end=end,
        sealed_us=T0 + last,
        digest=blake3.blake3(data[:end]).digest() if digest is None else digest,
    )


def write_meta(directory: Path, meta: Meta) -> None:
    (directory / "META").write_bytes(encode_meta(meta))


def expect_damage(
    found: Plan,
    *,
    index: int,
    path: Path,
    offset: int,
    lsn: int,
    error: type[CorruptionError],
    torn: bool,
    keep_prefix: bool,
    reason: str,
) -> Damage:
    damage = found.damage
    assert damage is not None, found
    assert (damage.index, damage.path, damage.offset, damage.lsn) == (index, str(path), offset, lsn)
    assert damage.error is error, damage
    assert (damage.torn, damage.keep_prefix) == (torn, keep_prefix), damage
    assert reason in damage.reason, damage
    exc = damage.exception()
    assert type(exc) is error
    assert (exc.path, exc.offset, exc.lsn) == (str(path), offset, lsn)
    assert str(exc.reason).startswith("torn tail: ") is torn
    return damage


def kept(found: Plan) -> list[tuple[int, int, bool]]:
    """(first LSN, last LSN, sealed) of each segment the plan keeps."""
    return [(s.header.first_lsn, s.last_lsn, s.sealed) for s in found.segments]


# -- a clean log, and the directory listing -------------------------------------------------


def test_clean_log_keeps_every_segment_and_names_its_log(tmp_path: Path) -> None:
    log = crafted(tmp_path)
    found = look(log)
    assert found.damage is None
    assert kept(found) == [(1, 2, True), (3, 4, True), (5, 6, False)]
    assert [s.path for s in found.segments] == [str(p) for p in segment_files(log)]
    assert found.log_id == LOG_ID
    assert not found.has_meta and found.obsolete == [] and found.quarantine == []
    tail = found.segments[-1]
    assert (tail.end, tail.size) == (seg(log, 5).stat().st_size,) * 2
    assert (tail.min_ts, tail.max_ts) == (T0 + 5, T0 + 6)


def test_empty_directory_has_no_log_id(tmp_path: Path) -> None:
    found = look(tmp_path)
    assert found.segments == [] and found.damage is None
    assert found.log_id is None


def test_directory_with_a_segment_name_is_refused(tmp_path: Path) -> None:
    log = crafted(tmp_path)
    odd = seg(log, 7)
    odd.mkdir()
    with pytest.raises(SegmentHeaderError) as info:
        look(log)
    err = info.value
    assert (err.path, err.offset) == (str(odd), 0)
    assert "not a regular file" in err.reason


def test_directory_entries_are_sorted_by_kind(tmp_path: Path) -> None:
    """Leftover temp files and orphaned index sidecars are noted for removal, unknown
    names are reported as foreign, and segwal's other files are left alone."""
    log = crafted(tmp_path)
    names = {
        "00000000000000000007.wal.tmp": b"partial",  # a crash while creating a segment
        "META.tmp": b"partial",  # a crash while replacing META
        "00000000000000000003.wal.idx": b"index",  # the sidecar of a live segment
        "00000000000000000009.wal.idx": b"index",  # its segment was deleted
        "00000000000000000001.wal.1.quarantine": b"moved aside",
        "cursor.indexer": b"cursor",
        "LOCK": b"",
        "README": b"not mine",
        "1.wal": b"not mine",
    }
    for name, data in names.items():
        (log / name).write_bytes(data)
    found = look(log)
    assert found.damage is None
    assert kept(found) == [(1, 2, True), (3, 4, True), (5, 6, False)]
    assert found.temp_files == [
        str(log / "00000000000000000007.wal.tmp"),
        str(log / "META.tmp"),
        str(log / "00000000000000000009.wal.idx"),
    ]
    assert found.foreign == [str(log / "1.wal"), str(log / "README")]
    assert not found.has_meta


def test_cursor_temp_files_are_leftovers_and_temp_names_that_are_not_files_foreign(
    tmp_path: Path,
) -> None:
    """A cursor commit cut short leaves ``cursor.{name}.{pid}.tmp``: removed like META.tmp.
    A temp name that is a directory is never removed: it is reported as foreign."""
    log = crafted(tmp_path)
    (log / "cursor.indexer.4242.tmp").write_bytes(b"partial")
    (log / "cursor.indexer").write_bytes(b"cursor")
    (log / "META.tmp").mkdir()
    (log / "00000000000000000007.wal.tmp").mkdir()
    found = look(log)
    assert found.temp_files == [str(log / "cursor.indexer.4242.tmp")]
    assert found.foreign == [str(log / "00000000000000000007.wal.tmp"), str(log / "META.tmp")]


def test_archive_files_are_left_alone_and_archive_names_that_are_not_files_foreign(
    tmp_path: Path,
) -> None:
    """The archive's files beside a log (ARCHIVE.state, MIRROR.state, their temp files)
    are neither removed nor foreign; a directory under such a name is foreign."""
    log = crafted(tmp_path)
    (log / "ARCHIVE.state").write_bytes(b"state")
    (log / "ARCHIVE.state.4242.tmp").write_bytes(b"partial")
    (log / "MIRROR.state").mkdir()
    found = look(log)
    assert found.damage is None
    assert found.temp_files == []
    assert found.foreign == [str(log / "MIRROR.state")]


def _one_segment_log(root: Path, *, sequence: int, prev_digest: bytes) -> Path:
    """A one-segment log whose only segment starts at LSN 1 with these header fields."""
    directory = root / "log"
    directory.mkdir()
    raw = encode_header(
        log_id=LOG_ID,
        sequence=sequence,
        first_lsn=1,
        created_us=T0,
        max_record_bytes=1 << 20,
        prev_digest=prev_digest,
    )
    seed = decode_header(raw).seed
    frame = frame_bytes(seed, 1, [payload_for(1)], durable_lsn=0, commit=True, timestamp_us=T0)
    seg(directory, 1).write_bytes(raw + frame)
    return directory


@pytest.mark.parametrize(
    ("sequence", "prev_digest", "reason"),
    [
        (3, bytes(32), "sequence 3, not 0"),
        (0, b"\x07" * 32, "non-zero previous digest"),
    ],
)
def test_without_meta_the_first_segment_must_be_the_first_ever(
    tmp_path: Path, sequence: int, prev_digest: bytes, reason: str
) -> None:
    """Without META nothing was ever truncated: a first segment that names a predecessor
    (by its sequence or its previous digest) means segments are missing (issue 13)."""
    log = _one_segment_log(tmp_path, sequence=sequence, prev_digest=prev_digest)
    with pytest.raises(ContinuityError) as info:
        look(log)
    assert (info.value.path, info.value.offset, info.value.lsn) == (str(seg(log, 1)), 0, 1)
    assert reason in info.value.reason
    write_meta(log, Meta(first_lsn=1))  # with a checkpoint the log may start anywhere
    assert look(log).damage is None


def test_a_damaged_first_header_is_reported_before_missing_segments(tmp_path: Path) -> None:
    log = crafted(tmp_path)
    seg(log, 1).unlink()
    xor_byte(seg(log, 3), 0)
    found = look(log)
    assert found.damage is not None and found.damage.error is SegmentHeaderError


# -- META: the checkpoint and an unfinished rewind ------------------------------------------


@pytest.mark.parametrize(
    ("checkpoint", "obsolete", "segments"),
    [
        (1, [], [(1, 2, True), (3, 4, True), (5, 6, False)]),
        (3, [1], [(3, 4, True), (5, 6, False)]),
        (4, [1], [(3, 4, True), (5, 6, False)]),
        # Everything is below the checkpoint: the last segment stays as the log's end.
        (7, [1, 3], [(5, 6, False)]),
    ],
)
def test_segments_wholly_below_the_checkpoint_are_obsolete(
    tmp_path: Path, checkpoint: int, obsolete: list[int], segments: list[tuple[int, int, bool]]
) -> None:
    log = crafted(tmp_path)
    write_meta(log, Meta(first_lsn=checkpoint))
    found = look(log)
    assert found.has_meta and found.meta.first_lsn == checkpoint
    assert found.damage is None
    assert found.obsolete == [str(seg(log, n)) for n in obsolete]
    assert kept(found) == segments
    assert found.log_id == LOG_ID


def test_checkpoint_past_the_end_of_the_records_is_refused(tmp_path: Path) -> None:
    log = crafted(tmp_path)
    write_meta(log, Meta(first_lsn=8))  # the records end at 6: LSN 7 would be a gap
    with pytest.raises(ContinuityError) as info:
        look(log)
    err = info.value
    assert (err.path, err.offset, err.lsn) == (str(log / "META"), 0, 8)
    assert "checkpoint keeps LSN 8 and later, but its records end at LSN 6" in err.reason


def test_first_segment_after_the_checkpoint_is_refused(tmp_path: Path) -> None:
    log = crafted(tmp_path)
    seg(log, 1).unlink()
    # Without META the log was never truncated: it must start at LSN 1 (issue 13, finding 2;
    # this test used to accept a log that starts anywhere).
    with pytest.raises(ContinuityError) as missing:
        look(log)
    assert (missing.value.path, missing.value.lsn) == (str(seg(log, 3)), 1)
    # With a checkpoint that keeps LSN 2, the segment holding it is missing.
    write_meta(log, Meta(first_lsn=2))
    with pytest.raises(ContinuityError) as info:
        look(log)
    err = info.value
    assert (err.path, err.offset, err.lsn) == (str(seg(log, 3)), 0, 2)
    assert "first segment starts at LSN 3" in err.reason


@pytest.mark.parametrize(("after", "obsolete"), [(4, [5]), (3, [5]), (2, [3, 5]), (6, [])])
def test_segments_past_an_unfinished_rewind_are_obsolete(
    tmp_path: Path, after: int, obsolete: list[int]
) -> None:
    log = crafted(tmp_path)
    write_meta(log, Meta(truncate_after=after))
    found = look(log)
    assert found.damage is None
    assert found.obsolete == [str(seg(log, n)) for n in obsolete]
    last_kept = {4: 3, 3: 3, 2: 1, 6: 5}[after]  # a segment holding LSN `after` stays
    assert found.segments[-1].header.first_lsn == last_kept
    if obsolete:
        # The segment left last is sealed: scanned as a tail, its seal checked and kept.
        assert found.segments[-1].sealed
        assert found.segments[-1].last_lsn == last_kept + 1
        assert found.segments[-1].seal is not None


# -- headers and the chain between segments -------------------------------------------------


@pytest.mark.parametrize("which", [3, 5])
def test_segment_shorter_than_a_header(tmp_path: Path, which: int) -> None:
    log = crafted(tmp_path)
    path = seg(log, which)
    os.truncate(path, HEADER_SIZE - 28)
    found = look(log)
    index = [1, 3, 5].index(which)
    expect_damage(
        found,
        index=index,
        path=path,
        offset=0,
        lsn=which,
        error=SegmentHeaderError,
        torn=False,  # a header is durable before the segment has its name
        keep_prefix=False,
        reason=f"segment of {HEADER_SIZE - 28} bytes is shorter than its header",
    )
    assert kept(found) == [(1, 2, True), (3, 4, True)][:index]
    assert found.quarantine == [str(seg(log, n)) for n in [1, 3, 5][index + 1 :]]
    with pytest.raises(SegmentHeaderError):
        segwal.open(log)


@pytest.mark.parametrize(
    ("field", "error", "reason"),
    [
        ({"first_lsn": 9}, SegmentHeaderError, "header says first LSN 9, name says 3"),
        ({"sequence": 5}, ContinuityError, "segment sequence 5 does not follow 0"),
        ({"log_id": OTHER_ID}, ContinuityError, "segment belongs to another log"),
        ({"prev_digest": b"\x01" * 32}, ContinuityError, "broken digest chain"),
    ],
    ids=["name", "sequence", "log_id", "digest"],
)
def test_header_that_does_not_follow_the_previous_segment(
    tmp_path: Path, field: dict[str, int | bytes], error: type[CorruptionError], reason: str
) -> None:
    log = crafted(tmp_path)
    patch_header(seg(log, 3), **field)
    found = look(log)
    expect_damage(
        found,
        index=1,
        path=seg(log, 3),
        offset=0,
        lsn=3,
        error=error,
        torn=False,
        keep_prefix=False,
        reason=reason,
    )
    assert kept(found) == [(1, 2, True)]
    assert found.quarantine == [str(seg(log, 5))]


@pytest.mark.parametrize("which", [1, 5])
def test_damaged_header(tmp_path: Path, which: int) -> None:
    log = crafted(tmp_path)
    path = seg(log, which)
    xor_byte(path, 20)  # inside the log id: the header checksum no longer matches
    found = look(log)
    index = [1, 3, 5].index(which)
    expect_damage(
        found,
        index=index,
        path=path,
        offset=0,
        lsn=which,
        error=SegmentHeaderError,
        torn=False,
        keep_prefix=False,
        reason="header checksum mismatch",
    )
    assert len(found.segments) == index
    assert found.log_id == (None if which == 1 else LOG_ID)


@pytest.mark.parametrize(("name", "kind"), [(4, "gap"), (2, "overlap")])
def test_lsn_gap_or_overlap_between_chained_segments(tmp_path: Path, name: int, kind: str) -> None:
    """The second segment moved to another first LSN, its header agreeing with its new name,
    same log and next sequence: only the LSN continuity catches it."""
    log = crafted(tmp_path)
    moved = seg(log, name)
    seg(log, 3).rename(moved)
    patch_header(moved, first_lsn=name)
    found = look(log)
    expect_damage(
        found,
        index=1,
        path=moved,
        offset=0,
        lsn=3,
        error=ContinuityError,
        torn=False,
        keep_prefix=False,
        reason=f"LSN {kind}: previous segment ends at LSN 2",
    )
    assert kept(found) == [(1, 2, True)]
    assert found.quarantine == [str(seg(log, 5))]


# -- the active segment, frame by frame -----------------------------------------------------


def test_frame_with_an_unexpected_lsn(tmp_path: Path) -> None:
    log = crafted(tmp_path)
    tail = seg(log, 5)
    size = tail.stat().st_size
    append_bytes(tail, frame_for(tail, 8, durable=6))  # LSN 7 is missing
    found = look(log)
    expect_damage(
        found,
        index=2,
        path=tail,
        offset=size,
        lsn=7,
        error=CorruptionError,
        torn=True,  # nothing written after it proves LSN 7 was ever durable
        keep_prefix=True,
        reason="frame holds LSN 8, expected 7",
    )
    assert kept(found) == [(1, 2, True), (3, 4, True), (5, 6, False)]
    assert found.segments[-1].end == size
    # A frame after it that was written once LSN 7 was durable makes it corruption.
    append_bytes(tail, frame_for(tail, 9, durable=8))
    damage = expect_damage(
        look(log),
        index=2,
        path=tail,
        offset=size,
        lsn=7,
        error=CorruptionError,
        torn=False,
        keep_prefix=True,
        reason="frame holds LSN 8, expected 7",
    )
    assert damage.reason.endswith("a later frame was written after LSN 7 was durable")


def test_frame_claiming_itself_durable(tmp_path: Path) -> None:
    log = crafted(tmp_path)
    tail = seg(log, 5)
    size = tail.stat().st_size
    append_bytes(tail, frame_for(tail, 7, durable=7))
    found = look(log)
    expect_damage(
        found,
        index=2,
        path=tail,
        offset=size,
        lsn=7,
        error=CorruptionError,
        torn=True,
        keep_prefix=True,
        reason="frame claims durable LSN 7 ahead of itself",
    )
    assert found.segments[-1].last_lsn == 6


def test_batch_of_several_frames_is_indexed_at_its_first_frame_only(tmp_path: Path) -> None:
    """A batch of LSNs 3-4 in two frames, the second more than an index interval into the
    segment: the index points at batch starts (LSNs 2 and 5), never inside a batch."""
    log = tmp_path / "log"
    craft_log(log, segments=2, records_per_segment=1, log_id=LOG_ID)
    tail = seg(log, 2)
    append_bytes(tail, frame_for(tail, 3, durable=2, payload=b"a" * 5000, commit=False))
    batch_end = tail.stat().st_size
    append_bytes(tail, frame_for(tail, 4, durable=2))
    fifth = tail.stat().st_size
    append_bytes(tail, frame_for(tail, 5, durable=4))
    found = look(log)
    assert found.damage is None
    state = found.segments[-1]
    assert (state.last_lsn, state.end, state.max_ts) == (5, tail.stat().st_size, T0 + 5)
    assert state.index is not None
    assert state.index.lsns == [2, 5]
    assert state.index.offsets == [HEADER_SIZE, fifth]
    assert batch_end > HEADER_SIZE + state.index.interval  # the 2nd frame was eligible by offset


def test_last_batch_without_its_commit_frame(tmp_path: Path) -> None:
    log = crafted(tmp_path)
    tail = seg(log, 5)
    size = tail.stat().st_size
    append_bytes(tail, frame_for(tail, 7, durable=6, commit=False))
    found = look(log)
    expect_damage(
        found,
        index=2,
        path=tail,
        offset=size,
        lsn=7,
        error=CorruptionError,
        torn=True,
        keep_prefix=True,
        reason="last batch has no commit marker",
    )
    state = found.segments[-1]
    assert (state.end, state.last_lsn) == (size, 6)
    # Its commit frame makes the batch whole.
    append_bytes(tail, frame_for(tail, 8, durable=6))
    found = look(log)
    assert found.damage is None
    assert (found.segments[-1].last_lsn, found.segments[-1].end) == (8, tail.stat().st_size)


SEAL_CASES = ["valid", "after uncommitted batch", "wrong range", "bad digest", "bytes after"]


@pytest.mark.parametrize("case", SEAL_CASES)
def test_seal_at_the_end_of_the_last_segment(tmp_path: Path, case: str) -> None:
    """A crash between sealing a segment and creating the next leaves a sealed last segment;
    its seal is checked against the frames before it, and a bad one is cut as a tear."""
    log = crafted(tmp_path)
    tail = seg(log, 5)
    size = tail.stat().st_size
    seal_at = size
    if case == "valid":
        append_bytes(tail, seal_for(tail, first=5, last=6))
        reason = ""
    elif case == "after uncommitted batch":
        append_bytes(tail, frame_for(tail, 7, durable=6, commit=False))
        seal_at = tail.stat().st_size
        append_bytes(tail, seal_for(tail, first=5, last=6, data_end=size))
        reason = "seal follows a batch without a commit marker"
    elif case == "wrong range":
        append_bytes(tail, seal_for(tail, first=5, last=7))
        reason = f"seal says LSNs 5..7 end at {size}"
    elif case == "bad digest":
        append_bytes(tail, seal_for(tail, first=5, last=6, digest=bytes(32)))
        reason = "seal digest does not match the segment"
    else:
        append_bytes(tail, seal_for(tail, first=5, last=6) + bytes(10))
        reason = "10 bytes follow the seal"
    found = look(log)
    state = found.segments[-1]
    assert (state.end, state.last_lsn) == (size, 6)
    if case == "valid":
        assert found.damage is None
        assert state.sealed and state.seal is not None
        assert (state.seal.first_lsn, state.seal.last_lsn, state.seal.data_end) == (5, 6, size)
        return
    assert not state.sealed
    expect_damage(
        found,
        index=2,
        path=tail,
        offset=seal_at,
        lsn=7,
        error=CorruptionError,
        torn=True,
        keep_prefix=True,
        reason=reason,
    )


@pytest.mark.parametrize(("damaged", "torn"), [(6, True), (5, False)])
def test_a_valid_seal_after_damage_proves_nothing(tmp_path: Path, damaged: int, torn: bool) -> None:
    """A sealed last segment whose final frame is damaged: the only valid thing after the
    damage is the seal, which may have been written before its barrier, so it is a tear.
    Damage to the frame before is corruption: the final frame proves it durable."""
    log = tmp_path / "log"
    craft_log(log, segments=2, records_per_segment=3, log_id=LOG_ID, seal_last=True)
    tail = seg(log, 4)
    frames, seal_at = read_frames(tail)
    assert [f.first_lsn for f in frames] == [4, 5, 6]
    assert seal_at == tail.stat().st_size - SEAL_SIZE
    frame = frames[damaged - 4]
    xor_byte(tail, frame.end - 1, 0x04)
    found = look(log)
    expect_damage(
        found,
        index=1,
        path=tail,
        offset=frame.offset,
        lsn=damaged,
        error=CorruptionError,
        torn=torn,
        keep_prefix=True,
        reason="frame checksum mismatch",
    )
    state = found.segments[-1]
    assert (state.end, state.last_lsn, state.sealed) == (frame.offset, damaged - 1, False)


# -- the search for a frame written after the damage was durable ----------------------------


def _bad_frame(tail: Path, lsn: int) -> bytes:
    frame = bytearray(frame_for(tail, lsn, durable=lsn - 1, payload=b"x" * 64))
    frame[-1] ^= 0x01
    return bytes(frame)


@pytest.mark.parametrize(("whole", "torn"), [(True, False), (False, True)])
def test_later_frame_cut_short_by_the_end_of_the_file(
    tmp_path: Path, whole: bool, torn: bool
) -> None:
    """A frame after the damage that the file cuts short proves nothing; whole, it does."""
    log = crafted(tmp_path)
    tail = seg(log, 5)
    size = tail.stat().st_size
    append_bytes(tail, _bad_frame(tail, 7))
    later = frame_for(tail, 8, durable=7, payload=b"y" * 200)
    append_bytes(tail, later if whole else later[: len(later) // 2])
    found = look(log)
    expect_damage(
        found,
        index=2,
        path=tail,
        offset=size,
        lsn=7,
        error=CorruptionError,
        torn=torn,
        keep_prefix=True,
        reason="frame checksum mismatch",
    )
    assert found.segments[-1].last_lsn == 6


@pytest.mark.parametrize(("durable", "torn"), [(7, False), (6, True)])
def test_later_frame_across_the_search_window(tmp_path: Path, durable: int, torn: bool) -> None:
    """The search reads the bytes after the damage in windows of SEARCH_WINDOW; a frame
    that starts inside a window and ends past it is fetched whole and judged."""
    log = crafted(tmp_path)
    tail = seg(log, 5)
    size = tail.stat().st_size
    append_bytes(tail, _bad_frame(tail, 7))
    later = frame_for(tail, 8, durable=durable, payload=b"y" * 400)
    at = SEARCH_WINDOW - 20  # from the search's start, one byte after the damage
    gap = size + 1 + at - tail.stat().st_size
    assert len(later) > 20 + SEAL_SIZE  # runs past the first window's read
    append_bytes(tail, bytes(gap) + later)
    assert tail.stat().st_size - (size + 1) > SEARCH_WINDOW + SEAL_SIZE
    found = look(log)
    damage = expect_damage(
        found,
        index=2,
        path=tail,
        offset=size,
        lsn=7,
        error=CorruptionError,
        torn=torn,
        keep_prefix=True,
        reason="frame checksum mismatch",
    )
    assert ("was durable" in damage.reason) is not torn
    assert found.segments[-1].last_lsn == 6


# -- looking again with what an earlier plan found (a readonly view) ------------------------


def test_sealed_segments_of_the_same_size_are_taken_as_checked(tmp_path: Path) -> None:
    log = crafted(tmp_path)
    first = look(log)
    # Damage a seal without changing the file's size: a first look sees it...
    middle = seg(log, 3)
    xor_byte(middle, middle.stat().st_size - 60)
    expect_damage(
        look(log),
        index=1,
        path=middle,
        offset=middle.stat().st_size - SEAL_SIZE,
        lsn=3,
        error=SealError,
        torn=False,
        keep_prefix=True,
        reason="seal checksum mismatch",
    )
    # ...a second look trusts what it checked before: sealed segments never change.
    again = look(log, known_of(first))
    assert again.damage is None
    assert again.segments[0] is first.segments[0]
    assert again.segments[1] is first.segments[1]
    assert again.segments[2] is not first.segments[2]
    assert kept(again) == kept(first)


def test_sealed_segment_that_changed_size_is_checked_again(tmp_path: Path) -> None:
    log = crafted(tmp_path)
    first = look(log)
    middle = seg(log, 3)
    append_bytes(middle, b"\0")
    size = middle.stat().st_size
    found = look(log, known_of(first))
    expect_damage(
        found,
        index=1,
        path=middle,
        offset=size - SEAL_SIZE,
        lsn=3,
        error=SealError,
        torn=False,
        keep_prefix=True,
        reason="",
    )
    assert found.segments == [first.segments[0]]


def test_cached_sealed_segment_that_no_longer_chains_is_read_again(tmp_path: Path) -> None:
    """The directory now holds another log with the same names and sizes: a cached sealed
    segment that does not follow the segment read before it is checked from the disk."""
    log = crafted(tmp_path)
    first = look(log)
    shutil.rmtree(log)
    crafted(tmp_path, log_id=OTHER_ID)
    path = str(seg(log, 3))
    assert first.segments[1].size == seg(log, 3).stat().st_size
    found = look(log, {path: first.segments[1]})
    assert found.damage is None
    assert found.segments[1] is not first.segments[1]
    assert [s.header.log_id for s in found.segments] == [OTHER_ID] * 3
    assert kept(found) == [(1, 2, True), (3, 4, True), (5, 6, False)]


def test_unsealed_tail_is_scanned_from_where_it_was_left(tmp_path: Path) -> None:
    log = crafted(tmp_path)
    first = look(log)
    old = first.segments[-1]
    tail = seg(log, 5)
    append_bytes(tail, frame_for(tail, 7, durable=6))
    # Bytes the first look checked are not read again: damage there goes unseen...
    frame5 = read_frames(tail)[0][0]
    xor_byte(tail, frame5.end - 1, 0x04)
    found = look(log, known_of(first))
    assert found.damage is None
    state = found.segments[-1]
    assert state is not old
    grown = tail.stat().st_size
    assert (state.last_lsn, state.end, state.size) == (7, grown, grown)
    assert (state.min_ts, state.max_ts) == (old.min_ts, T0 + 7)
    assert found.segments[:2] == first.segments[:2]
    # ...where a first look scans from the header and finds it.
    expect_damage(
        look(log),
        index=2,
        path=tail,
        offset=frame5.offset,
        lsn=5,
        error=CorruptionError,
        torn=False,
        keep_prefix=True,
        reason="frame checksum mismatch",
    )


def test_damage_after_the_cached_tail_means_a_look_from_the_start(tmp_path: Path) -> None:
    log = crafted(tmp_path)
    first = look(log)
    tail = seg(log, 5)
    size = tail.stat().st_size
    append_bytes(tail, bytes(100))  # new damage past the cached end
    found = look(log, known_of(first))
    expect_damage(
        found,
        index=2,
        path=tail,
        offset=size,
        lsn=7,
        error=CorruptionError,
        torn=True,
        keep_prefix=True,
        reason="no frame",
    )
    # Looking from the start, damage in bytes the cached scan had passed is what counts.
    frame5 = read_frames(tail)[0][0]
    xor_byte(tail, frame5.end - 1, 0x04)
    expect_damage(
        look(log, known_of(first)),
        index=2,
        path=tail,
        offset=frame5.offset,
        lsn=5,
        error=CorruptionError,
        torn=False,
        keep_prefix=True,
        reason="frame checksum mismatch",
    )


def test_cached_tail_that_got_sealed(tmp_path: Path) -> None:
    log = crafted(tmp_path)
    first = look(log)
    tail = seg(log, 5)
    append_bytes(tail, seal_for(tail, first=5, last=6))
    found = look(log, known_of(first))
    assert found.damage is None
    assert kept(found) == [(1, 2, True), (3, 4, True), (5, 6, True)]
    assert found.segments[-1].seal is not None
    assert found.segments[-1].seal.data_end == first.segments[-1].end


def test_cached_tail_rewritten_then_sealed_is_read_from_the_start(tmp_path: Path) -> None:
    """Since the last look the writer rewound the tail past LSN 5, wrote another LSN 6 of the
    same length and sealed: the seal sits exactly where the cached scan ended, but the
    segment is read again from its header, so the plan describes the bytes now on disk."""
    log = crafted(tmp_path)
    first = look(log)
    tail = seg(log, 5)
    old6 = read_frames(tail)[0][1]
    os.truncate(tail, old6.offset)
    new6 = frame_bytes(
        header_seed(tail), 6, [b"z" * (old6.length - 44)], durable_lsn=5, timestamp_us=T0 + 60
    )
    assert len(new6) == old6.length
    append_bytes(tail, new6)
    append_bytes(tail, seal_for(tail, first=5, last=6))
    found = look(log, known_of(first))
    assert found.damage is None
    state = found.segments[-1]
    assert (state.end, state.last_lsn, state.sealed) == (first.segments[-1].end, 6, True)
    assert (state.min_ts, state.max_ts) == (T0 + 5, T0 + 60)
    fresh = look(log).segments[-1]
    assert (fresh.min_ts, fresh.max_ts, fresh.seal) == (state.min_ts, state.max_ts, state.seal)


def test_cached_tail_that_was_rotated(tmp_path: Path) -> None:
    """The writer sealed the tail and created the next segment since the last look."""
    log = crafted(tmp_path)
    first = look(log)
    craft_log(log, segments=4, records_per_segment=2, log_id=LOG_ID)  # same bytes, extended
    found = look(log, known_of(first))
    assert found.damage is None
    assert kept(found) == [(1, 2, True), (3, 4, True), (5, 6, True), (7, 8, False)]
    assert found.segments[:2] == first.segments[:2]
    assert found.segments[2] is not first.segments[2]


def test_cached_tail_that_was_rewound(tmp_path: Path) -> None:
    log = crafted(tmp_path)
    first = look(log)
    tail = seg(log, 5)
    frame5 = read_frames(tail)[0][0]
    os.truncate(tail, frame5.end)  # shorter than the cached end: rescanned from the header
    found = look(log, known_of(first))
    assert found.damage is None
    assert found.segments[-1].last_lsn == 5
    assert found.segments[-1].end == frame5.end


def test_cached_tail_of_another_log_is_read_again(tmp_path: Path) -> None:
    log = crafted(tmp_path)
    first = look(log)
    shutil.rmtree(log)
    crafted(tmp_path, log_id=OTHER_ID)
    path = str(seg(log, 5))
    found = look(log, {path: first.segments[-1]})
    assert found.damage is None
    assert found.segments[-1] is not first.segments[-1]
    assert found.segments[-1].header.log_id == OTHER_ID
    assert [s.header.log_id for s in found.segments] == [OTHER_ID] * 3


# -- segwal.format.layout: guards the format tests do not reach ------------------------------------


@pytest.mark.parametrize(
    ("log_id", "prev_digest"), [(b"\x01" * 15, bytes(32)), (b"\x01" * 16, bytes(31))]
)
def test_encode_header_refuses_wrong_field_sizes(log_id: bytes, prev_digest: bytes) -> None:
    with pytest.raises(ValueError, match="log id must be 16 bytes"):
        encode_header(
            log_id=log_id,
            sequence=0,
            first_lsn=1,
            created_us=T0,
            max_record_bytes=1 << 20,
            prev_digest=prev_digest,
        )


def _one_record_batch(payload: memoryview) -> bytearray:
    return encode_frames(
        seed=1,
        first_lsn=1,
        record_type=0,
        timestamp_us=T0,
        durable_lsn=0,
        payloads=[payload],  # type: ignore[list-item]
        lengths=[len(payload)],
    )


def test_encode_frames_refuses_a_payload_whose_len_is_not_its_size() -> None:
    wide = memoryview(array("H", [1, 2, 3]))
    assert (len(wide), wide.nbytes) == (3, 6)
    with pytest.raises(ValueError, match="payload lengths disagree with their bytes"):
        _one_record_batch(wide)
    # The same bytes seen as bytes encode to a frame that checks.
    frame = _one_record_batch(wide.cast("B"))
    verdict = check(frame, 0, len(frame), 1, max_frame_bytes(1 << 20))
    assert verdict.frame is not None
    assert (verdict.frame.count, verdict.frame.body_len) == (1, 6)
    assert frame[-6:] == wide.tobytes()


def _seal(first: int, last: int) -> bytes:
    return encode_seal(
        seed=7,
        first_lsn=first,
        last_lsn=last,
        count=last - first + 1,
        min_ts=T0,
        max_ts=T0,
        data_end=HEADER_SIZE,
        sealed_us=T0,
        digest=bytes(32),
    )


@pytest.mark.parametrize(("first", "last"), [(MAX_LSN + 1, MAX_LSN + 1), (MAX_LSN, MAX_LSN + 1)])
def test_decode_seal_refuses_lsns_out_of_range(first: int, last: int) -> None:
    with pytest.raises(FormatError, match=f"seal LSNs {first}..{last} are out of range"):
        decode_seal(_seal(first, last), 7)
    assert decode_seal(_seal(MAX_LSN, MAX_LSN), 7).last_lsn == MAX_LSN


# -- a clean close's mark in META -------------------------------------------------------------


def _mark(directory: Path, end: int, *, segment: str | None = None) -> None:
    name = segment or segment_files(directory)[-1].name
    write_meta(directory, Meta(closed=Closed(segment=name, end=end, lsn=0)))


def _tear_last_frame(directory: Path) -> tuple[Path, FrameInfoType]:
    last = segment_files(directory)[-1]
    frames, _ = read_frames(last)
    xor_byte(last, frames[-1].end - 1)  # the last payload byte: a torn write, without a mark
    return last, frames[-1]


def test_damage_before_a_clean_close_mark_is_corruption(tmp_path: Path) -> None:
    directory = crafted(tmp_path)
    last, frame = _tear_last_frame(directory)
    assert look(directory).damage.torn  # type: ignore[union-attr]
    _mark(directory, last.stat().st_size)
    expect_damage(
        look(directory),
        index=2,
        path=last,
        offset=frame.offset,
        lsn=frame.first_lsn,
        error=CorruptionError,
        torn=False,
        keep_prefix=True,
        reason="a clean close left the segment durable up to offset",
    )


def test_damage_after_the_mark_is_still_a_torn_tail(tmp_path: Path) -> None:
    directory = crafted(tmp_path)
    _last, frame = _tear_last_frame(directory)
    _mark(directory, frame.offset)  # the torn frame was written after the clean close
    damage = look(directory).damage
    assert damage is not None and damage.torn


def test_a_mark_naming_another_segment_is_ignored(tmp_path: Path) -> None:
    directory = crafted(tmp_path)
    last, _frame = _tear_last_frame(directory)
    _mark(directory, last.stat().st_size, segment=segment_files(directory)[0].name)
    damage = look(directory).damage
    assert damage is not None and damage.torn


def test_a_tail_shorter_than_the_mark_is_corruption(tmp_path: Path) -> None:
    directory = crafted(tmp_path)
    last = segment_files(directory)[-1]
    frames, _ = read_frames(last)
    size = last.stat().st_size
    os.truncate(last, frames[-1].offset)  # a clean cut at a frame boundary: nothing torn
    assert look(directory).damage is None
    _mark(directory, size)
    expect_damage(
        look(directory),
        index=2,
        path=last,
        offset=frames[-1].offset,
        lsn=frames[-1].first_lsn,
        error=CorruptionError,
        torn=False,
        keep_prefix=True,
        reason="but a clean close left it durable up to offset",
    )


def test_a_tail_as_long_as_the_mark_is_clean(tmp_path: Path) -> None:
    directory = crafted(tmp_path)
    _mark(directory, segment_files(directory)[-1].stat().st_size)
    found = look(directory)
    assert found.damage is None and found.meta.closed is not None
