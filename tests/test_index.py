"""The sparse index: its arithmetic, its sidecar file, and what a bad sidecar may never do.

A sealed segment's index is a cache beside it (``{segment}.idx``). A sidecar that is
missing, cut short, damaged, another segment's or absurd is ignored and the index rebuilt
from the frame heads; a sidecar that is well formed but wrong must never make a read return
a wrong record: the frames it leads to are checked again, so a read returns the right record
or raises ``CorruptionError``.
"""

from __future__ import annotations

import contextlib
import random
import struct
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import segwal
from conftest import FakeClock, payload
from segwal.format.framing import encode_frames
from segwal.format.layout import FRAME_TARGET_BYTES, HEADER_SIZE, SEAL_SIZE, crc32c
from segwal.storage.fileio import OsFileSystem
from segwal.storage.index import INTERVAL, SparseIndex, build, load, sidecar_path

_HEAD = struct.Struct("<8sII32s")
_ENTRY = struct.Struct("<QQQ")
DIGEST = bytes(range(32))


# -- helpers ------------------------------------------------------------------------------


def make_index(entries: list[tuple[int, int, int]], interval: int = INTERVAL) -> SparseIndex:
    index = SparseIndex(interval)
    for lsn, offset, stamp in entries:
        index.lsns.append(lsn)
        index.offsets.append(offset)
        index.stamps.append(stamp)
    return index


def entries_of(index: SparseIndex) -> list[tuple[int, int, int]]:
    return list(zip(index.lsns, index.offsets, index.stamps, strict=True))


def build_log(
    directory: str, clock: FakeClock, *, segment_bytes: int = 64 << 10, batches: int = 300
) -> dict[int, bytes]:
    """A log of several sealed segments: single records and batches, with equal stamps
    inside a batch and a clock that sometimes stands still. Returns LSN -> payload."""
    rng = random.Random(7)
    expected: dict[int, bytes] = {}
    with segwal.open(directory, segment_bytes=segment_bytes, sync="never", clock=clock) as wal:
        for _ in range(batches):
            if rng.random() < 0.8:
                clock.advance(rng.choice([0, 0.001, 0.01]))
            if rng.random() < 0.5:
                lsn = wal.next_lsn
                data = payload(lsn, rng.randrange(0, 300))
                assert wal.append(data) == lsn
                expected[lsn] = data
            else:
                first = wal.next_lsn
                items = [
                    payload(first + i, rng.randrange(0, 200)) for i in range(rng.randint(1, 40))
                ]
                lsns = wal.append_batch(items)
                expected.update(zip(lsns, items, strict=True))
    return expected


def sealed_segments(directory: str) -> list[segwal.SegmentInfo]:
    with segwal.open(directory, readonly=True) as wal:
        return [s for s in wal.segments() if s.sealed]


def built_index(info: segwal.SegmentInfo) -> SparseIndex:
    handle = OsFileSystem().open_read(info.path)
    try:
        return build(handle, info.size_bytes - SEAL_SIZE)
    finally:
        handle.close()


def loaded_index(info: segwal.SegmentInfo) -> SparseIndex:
    return load(OsFileSystem(), info.path, bytes.fromhex(info.digest), info.size_bytes - SEAL_SIZE)


def frame_starts(info: segwal.SegmentInfo) -> list[tuple[int, int, int]]:
    """(first LSN, offset, timestamp) of every frame of a sealed segment, from its bytes."""
    data = Path(info.path).read_bytes()
    end = len(data) - SEAL_SIZE
    pos, found = HEADER_SIZE, []
    while pos < end:
        _crc, _kind, _flags, _type, count, body, first, stamp, _durable = struct.unpack_from(
            "<IBBHIIQQQ", data, pos
        )
        found.append((first, pos, stamp))
        pos += 40 + 4 * count + body
    assert pos == end
    return found


def check_reads(directory: str, expected: dict[int, bytes], lsns: list[int]) -> int:
    """Each read returns the right record or raises CorruptionError; returns how many raised."""
    raised = 0
    # A writer's view: a readonly one looks at the directory again before every read.
    with segwal.open(directory, sync="never") as wal:
        for lsn in lsns:
            try:
                record = wal.read(lsn)
            except segwal.CorruptionError:
                raised += 1
                continue
            assert record.lsn == lsn
            assert record.payload == expected[lsn], f"LSN {lsn}: wrong payload"
        for start in lsns[:: max(1, len(lsns) // 20)]:
            try:
                got = list(wal.replay(start, start + 30))
            except segwal.CorruptionError:
                raised += 1
                continue
            want = [lsn for lsn in range(start, start + 31) if lsn in expected]
            assert [r.lsn for r in got] == want
            assert all(r.payload == expected[r.lsn] for r in got)
            try:
                batch = wal.read_batch(start, max_records=25)
            except segwal.CorruptionError:
                raised += 1
                continue
            assert [r.lsn for r in batch.records] == want[:25]
            assert all(r.payload == expected[r.lsn] for r in batch.records)
    return raised


# -- SparseIndex arithmetic -----------------------------------------------------------------


def test_add_keeps_one_entry_per_interval() -> None:
    index = SparseIndex(100)
    index.add(1, HEADER_SIZE, 10)
    index.add(2, HEADER_SIZE + 50, 11)  # within the interval: dropped
    index.add(5, HEADER_SIZE + 99, 12)  # still within it
    index.add(9, HEADER_SIZE + 100, 13)  # an interval later: kept
    index.add(12, HEADER_SIZE + 500, 13)
    assert entries_of(index) == [(1, 128, 10), (9, 228, 13), (12, 628, 13)]
    assert len(index) == 3


def test_trim_drops_entries_at_or_past_the_cut_and_resumes_adding() -> None:
    index = SparseIndex(100)
    for lsn, offset in [(1, 128), (4, 228), (8, 400), (10, 600)]:
        index.add(lsn, offset, lsn * 10)
    index.trim(400)
    assert entries_of(index) == [(1, 128, 10), (4, 228, 40)]
    index.add(6, 300, 60)  # within an interval of the last kept entry
    index.add(7, 328, 70)  # an interval past it
    assert entries_of(index) == [(1, 128, 10), (4, 228, 40), (7, 328, 70)]
    index.trim(0)
    assert len(index) == 0
    index.add(1, HEADER_SIZE, 1)
    assert entries_of(index) == [(1, HEADER_SIZE, 1)]


def test_seek_lsn() -> None:
    index = make_index([(10, 128, 1), (20, 5000, 2), (35, 9000, 3)])
    assert index.seek_lsn(5, 5) == (5, HEADER_SIZE)  # before the first entry: segment start
    assert index.seek_lsn(10, 10) == (10, 128)
    assert index.seek_lsn(19, 10) == (10, 128)
    assert index.seek_lsn(20, 10) == (20, 5000)
    assert index.seek_lsn(34, 10) == (20, 5000)
    assert index.seek_lsn(10**9, 10) == (35, 9000)
    assert SparseIndex().seek_lsn(7, 3) == (3, HEADER_SIZE)


def test_seek_time_lands_before_the_first_batch_at_or_after_the_time() -> None:
    index = make_index([(1, 128, 100), (5, 4300, 100), (9, 8500, 200), (14, 12700, 300)])
    assert index.seek_time(50, 1) == (1, HEADER_SIZE)
    assert index.seek_time(100, 1) == (1, HEADER_SIZE)  # equal stamps: the earliest one counts
    assert index.seek_time(101, 1) == (5, 4300)
    assert index.seek_time(200, 1) == (5, 4300)
    assert index.seek_time(201, 1) == (9, 8500)
    assert index.seek_time(10**18, 1) == (14, 12700)
    assert SparseIndex().seek_time(5, 1) == (1, HEADER_SIZE)


batch_plans = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=50),  # records in the batch
        st.integers(min_value=41, max_value=3000),  # bytes of the batch
        st.integers(min_value=0, max_value=3),  # clock step
    ),
    min_size=1,
    max_size=200,
)


@settings(max_examples=60, deadline=None)
@given(plan=batch_plans, interval=st.sampled_from([1, 100, 1000, INTERVAL]))
def test_seeks_agree_with_a_linear_model(plan: list[tuple[int, int, int]], interval: int) -> None:
    index = SparseIndex(interval)
    batches = []  # (first LSN, offset, stamp) of every batch
    lsn, offset, stamp = 1, HEADER_SIZE, 1000
    for count, size, step in plan:
        stamp += step
        batches.append((lsn, offset, stamp))
        index.add(lsn, offset, stamp)
        lsn, offset = lsn + count, offset + size
    kept = entries_of(index)
    assert kept[0] == batches[0]
    assert all(b[1] - a[1] >= interval for a, b in pairwise(kept))
    assert set(kept) <= set(batches)
    for target in range(1, lsn + 2):
        got = index.seek_lsn(target, 1)
        want = max((e for e in kept if e[0] <= target), default=(1, HEADER_SIZE, 0))[:2]
        assert got == want
    for target in {b[2] for b in batches} | {1000, stamp + 1}:
        got = index.seek_time(target, 1)
        before = [e for e in kept if e[2] < target]
        assert got == (before[-1][:2] if before else (1, HEADER_SIZE))
        # Nothing before the seek point is stamped at or after the target.
        assert all(b[2] < target for b in batches if b[1] < got[1])


# -- the sidecar encoding -------------------------------------------------------------------


def test_encode_decode_round_trip() -> None:
    index = make_index([(1, HEADER_SIZE, 5), (40, 4300, 5), (77, 9000, 8)], interval=4096)
    data = index.encode(DIGEST)
    assert data[:8] == b"SWIDX001"
    assert len(data) == _HEAD.size + 3 * _ENTRY.size + 4
    back = SparseIndex.decode(data, DIGEST)
    assert back is not None
    assert entries_of(back) == entries_of(index)
    assert back.interval == 4096
    # The decoded index keeps adding where the original would.
    back.add(90, 9000 + 4095, 9)
    back.add(91, 9000 + 4096, 9)
    assert back.lsns[-1] == 91 and len(back) == 4


def test_empty_index_round_trips() -> None:
    back = SparseIndex.decode(SparseIndex(77).encode(DIGEST), DIGEST)
    assert back is not None and len(back) == 0 and back.interval == 77


def test_decode_rejects_another_segments_digest() -> None:
    data = make_index([(1, HEADER_SIZE, 5)]).encode(DIGEST)
    assert SparseIndex.decode(data, bytes(32)) is None


def test_decode_rejects_every_truncation_and_every_flipped_byte() -> None:
    data = make_index([(1, HEADER_SIZE, 5), (9, 5000, 6)]).encode(DIGEST)
    for size in range(len(data)):
        assert SparseIndex.decode(data[:size], DIGEST) is None, size
    for pos in range(len(data)):
        damaged = bytearray(data)
        damaged[pos] ^= 0x40
        assert SparseIndex.decode(bytes(damaged), DIGEST) is None, pos
    assert SparseIndex.decode(data + b"\0", DIGEST) is None


def reseal(body: bytes) -> bytes:
    """``body`` with a correct CRC: a sidecar that is well formed whatever it says."""
    return body + struct.pack("<I", crc32c(body))


def sidecar(
    entries: list[tuple[int, int, int]],
    *,
    count: int | None = None,
    interval: int = 4096,
    digest: bytes = DIGEST,
) -> bytes:
    body = _HEAD.pack(b"SWIDX001", len(entries) if count is None else count, interval, digest)
    return reseal(body + b"".join(_ENTRY.pack(*e) for e in entries))


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(sidecar([(1, HEADER_SIZE, 1)], count=2**32 - 1), id="absurd-count"),
        pytest.param(sidecar([(1, HEADER_SIZE, 1)], count=0), id="count-too-small"),
        pytest.param(sidecar([(1, HEADER_SIZE, 1)], interval=0), id="zero-interval"),
        pytest.param(sidecar([(1, 200, 1)]), id="first-offset-not-the-header-end"),
        pytest.param(sidecar([(1, HEADER_SIZE, 1), (9, 9000, 2), (5, 5000, 3)]), id="unsorted"),
        pytest.param(reseal(b"SWIDX002" + sidecar([(1, HEADER_SIZE, 1)])[8:-4]), id="other-magic"),
    ],
)
def test_decode_rejects_well_sealed_nonsense(data: bytes) -> None:
    assert SparseIndex.decode(data, DIGEST) is None


# -- loading sidecars of a real log ---------------------------------------------------------


@pytest.fixture(scope="module")
def reference_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[int, bytes]]:
    directory = str(tmp_path_factory.mktemp("index") / "wal")
    expected = build_log(directory, FakeClock())
    return directory, expected


@pytest.fixture
def log_copy(
    reference_log: tuple[str, dict[int, bytes]], tmp_path: Path
) -> tuple[str, dict[int, bytes], list[segwal.SegmentInfo]]:
    import shutil

    source, expected = reference_log
    directory = str(tmp_path / "wal")
    shutil.copytree(source, directory)
    return directory, expected, sealed_segments(directory)


def test_reference_log_has_sidecars_that_load_as_saved(
    log_copy: tuple[str, dict[int, bytes], list[segwal.SegmentInfo]],
) -> None:
    _directory, _expected, sealed = log_copy
    assert len(sealed) >= 4
    for info in sealed:
        path = Path(sidecar_path(info.path))
        assert path.exists()
        saved = SparseIndex.decode(path.read_bytes(), bytes.fromhex(info.digest))
        assert saved is not None and len(saved) > 3
        assert entries_of(loaded_index(info)) == entries_of(saved)
        assert entries_of(built_index(info)) == entries_of(saved)


def _missing(path: Path, _other: Path) -> None:
    path.unlink()


def _empty(path: Path, _other: Path) -> None:
    path.write_bytes(b"")


def _truncated(path: Path, _other: Path) -> None:
    path.write_bytes(path.read_bytes()[:-30])


def _bad_crc(path: Path, _other: Path) -> None:
    data = bytearray(path.read_bytes())
    data[60] ^= 1  # inside the first entry
    path.write_bytes(bytes(data))


def _foreign(path: Path, other: Path) -> None:
    path.write_bytes(other.read_bytes())  # another segment's sidecar: digest mismatch


def _absurd_count(path: Path, _other: Path) -> None:
    data = path.read_bytes()
    head = _HEAD.unpack_from(data)
    path.write_bytes(reseal(_HEAD.pack(head[0], 2**31, head[2], head[3]) + data[_HEAD.size : -4]))


def _huge_file(path: Path, _other: Path) -> None:
    # Far larger than any index of the segment could be: it must not even be read whole.
    with path.open("ab") as f:
        f.truncate(1 << 30)


def _past_the_end(path: Path, _other: Path) -> None:
    data = path.read_bytes()
    head = _HEAD.unpack_from(data)
    entries = list(_ENTRY.iter_unpack(data[_HEAD.size : -4]))
    entries.append((entries[-1][0] + 1, 10**9, entries[-1][2]))
    body = _HEAD.pack(head[0], len(entries), head[2], head[3])
    path.write_bytes(reseal(body + b"".join(_ENTRY.pack(*e) for e in entries)))


def _directory(path: Path, _other: Path) -> None:
    path.unlink()
    path.mkdir()


DAMAGES: dict[str, Callable[[Path, Path], None]] = {
    "missing": _missing,
    "empty": _empty,
    "truncated": _truncated,
    "bad-crc": _bad_crc,
    "foreign": _foreign,
    "absurd-count": _absurd_count,
    "huge-file": _huge_file,
    "entry-past-the-end": _past_the_end,
    "directory": _directory,
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_unusable_sidecar_is_ignored_and_the_index_rebuilt(
    log_copy: tuple[str, dict[int, bytes], list[segwal.SegmentInfo]], damage: str
) -> None:
    directory, expected, sealed = log_copy
    for i, info in enumerate(sealed):
        other = sealed[(i + 1) % len(sealed)]
        DAMAGES[damage](Path(sidecar_path(info.path)), Path(sidecar_path(other.path)))
    for info in sealed:
        assert entries_of(loaded_index(info)) == entries_of(built_index(info))
    lsns = sorted(expected)
    rng = random.Random(damage)
    assert check_reads(directory, expected, rng.sample(lsns, 150) + lsns[:3] + lsns[-3:]) == 0


def test_build_matches_the_live_index_and_recovery(tmp_path: Path) -> None:
    """The writer's live index, the saved sidecar, build() and recovery's scan agree, and a
    batch of several frames is one entry (seeks land on batch starts only)."""
    clock = FakeClock()
    directory = str(tmp_path / "wal")
    big = FRAME_TARGET_BYTES // 2 + 1000  # three of these make one batch of two frames
    with segwal.open(directory, segment_bytes=16 << 20, sync="never", clock=clock) as wal:
        for i in range(400):
            clock.advance(0.001 * (i % 3))
            if i % 100 == 25:
                wal.append_batch([payload(wal.next_lsn + k, big) for k in range(3)])
            elif i % 2:
                wal.append_batch([payload(wal.next_lsn + k) for k in range(i % 17 + 1)])
            else:
                wal.append(payload(wal.next_lsn, 500))
        live = entries_of(wal._state.writer.index)  # type: ignore[union-attr]
        end = wal._state.writer.offset  # type: ignore[union-attr]
    # Reopened: recovery scanned the unsealed tail and rebuilt the same index.
    with segwal.open(directory, segment_bytes=16 << 20, sync="never", clock=clock) as wal:
        assert entries_of(wal._state.writer.index) == live  # type: ignore[union-attr]
        handle = OsFileSystem().open_read(wal._state.writer.path)  # type: ignore[union-attr]
        try:
            assert entries_of(build(handle, end)) == live
        finally:
            handle.close()
        wal.rotate()
    (info,) = sealed_segments(directory)
    assert entries_of(loaded_index(info)) == live
    assert entries_of(built_index(info)) == live
    starts = frame_starts(info)
    assert len(starts) > len({lsn for lsn, _, _ in live})  # some batches have several frames
    offsets = {offset for _lsn, offset, _ts in starts}
    assert all(offset in offsets for _lsn, offset, _ts in live)
    # Multi-frame batches: their second frame is never an entry.
    second_frames = {
        starts[i + 1][1] for i in range(len(starts) - 1) if starts[i][2] == starts[i + 1][2]
    }
    big_second = [o for o in second_frames if o not in {e[1] for e in live}]
    assert big_second


def test_build_stops_at_a_bad_head_without_inventing_entries(tmp_path: Path) -> None:
    directory = str(tmp_path / "wal")
    expected = build_log(directory, FakeClock(), segment_bytes=16 << 10, batches=60)
    info = sealed_segments(directory)[0]
    starts = frame_starts(info)
    whole = built_index(info)
    # Damage the kind byte of a frame in the middle: build() keeps the entries before it.
    cut = starts[len(starts) // 2][1]
    data = bytearray(Path(info.path).read_bytes())
    data[cut + 4] ^= 0xFF
    Path(info.path).write_bytes(bytes(data))
    handle = OsFileSystem().open_read(info.path)
    try:
        partial = build(handle, info.size_bytes - SEAL_SIZE)
    finally:
        handle.close()
    assert entries_of(partial) == [e for e in entries_of(whole) if e[1] < cut]
    assert expected


# -- wrong sidecars that are well formed ----------------------------------------------------


def _write_sidecar(info: segwal.SegmentInfo, entries: list[tuple[int, int, int]]) -> None:
    """Replace the segment's sidecar with one that loads (right digest, right CRC)."""
    index = make_index(sorted(entries, key=lambda e: e[1]))
    Path(sidecar_path(info.path)).write_bytes(index.encode(bytes.fromhex(info.digest)))
    assert entries_of(loaded_index(info)) == entries_of(index)  # it is trusted as written


def _lsns_shifted(info: segwal.SegmentInfo, rng: random.Random) -> list[tuple[int, int, int]]:
    entries = entries_of(loaded_index(info))
    return [entries[0]] + [(lsn + rng.choice([-3, -1, 1, 2, 7]), o, t) for lsn, o, t in entries[1:]]


def _other_frame_boundaries(
    info: segwal.SegmentInfo, rng: random.Random
) -> list[tuple[int, int, int]]:
    # Real frame starts, but labelled with the LSN and time of another batch start.
    entries = entries_of(loaded_index(info))
    starts = frame_starts(info)
    offsets = sorted(rng.sample([o for _l, o, _t in starts[1:]], len(entries) - 1))
    labels = entries[1:]
    rng.shuffle(labels)
    return [entries[0]] + [(lsn, o, t) for (lsn, _o, t), o in zip(labels, offsets, strict=True)]


def _mid_frame_offsets(info: segwal.SegmentInfo, rng: random.Random) -> list[tuple[int, int, int]]:
    entries = entries_of(loaded_index(info))
    end = info.size_bytes - SEAL_SIZE
    offsets = sorted(rng.sample(range(HEADER_SIZE + 1, end), len(entries) - 1))
    return [entries[0]] + [
        (lsn, o, t) for (lsn, _o, t), o in zip(entries[1:], offsets, strict=True)
    ]


def _offsets_shifted(info: segwal.SegmentInfo, rng: random.Random) -> list[tuple[int, int, int]]:
    entries = entries_of(loaded_index(info))
    return [entries[0]] + [(lsn, o + rng.choice([-40, -4, 4, 40]), t) for lsn, o, t in entries[1:]]


def _one_entry_too_late(info: segwal.SegmentInfo, rng: random.Random) -> list[tuple[int, int, int]]:
    # Each entry keeps its LSN but points at the next batch's start.
    entries = entries_of(loaded_index(info))
    starts = [o for _l, o, _t in frame_starts(info)]
    moved = [entries[0]]
    for lsn, offset, stamp in entries[1:]:
        later = [o for o in starts if o > offset]
        moved.append((lsn, later[0] if later else offset, stamp))
    return moved


def _one_entry_too_early(
    info: segwal.SegmentInfo, rng: random.Random
) -> list[tuple[int, int, int]]:
    entries = entries_of(loaded_index(info))
    starts = [o for _l, o, _t in frame_starts(info)]
    moved = [entries[0]]
    for lsn, offset, stamp in entries[1:]:
        earlier = [o for o in starts if moved[-1][1] < o < offset]
        moved.append((lsn, earlier[-1] if earlier else offset, stamp))
    return moved


WRONG: dict[str, Callable[[segwal.SegmentInfo, random.Random], list[tuple[int, int, int]]]] = {
    "lsns-shifted": _lsns_shifted,
    "other-frame-boundaries": _other_frame_boundaries,
    "mid-frame-offsets": _mid_frame_offsets,
    "offsets-shifted": _offsets_shifted,
    "entry-one-batch-too-late": _one_entry_too_late,
    "entry-one-batch-too-early": _one_entry_too_early,
}


@pytest.mark.parametrize("kind", sorted(WRONG))
def test_wrong_but_well_formed_sidecar_never_yields_a_wrong_record(
    log_copy: tuple[str, dict[int, bytes], list[segwal.SegmentInfo]], kind: str
) -> None:
    directory, expected, sealed = log_copy
    rng = random.Random(kind)
    for info in sealed:
        _write_sidecar(info, WRONG[kind](info, rng))
    inside = [lsn for info in sealed for lsn in range(info.first_lsn, info.last_lsn + 1)]
    check_reads(directory, expected, sorted(rng.sample(inside, 800)))


def test_sidecar_pointing_into_a_payload_never_yields_the_frame_inside_it(tmp_path: Path) -> None:
    from segwal.format.layout import decode_header

    directory = str(tmp_path / "wal")
    with segwal.open(directory, segment_bytes=64 << 10, sync="never") as wal:
        seg = wal.segments()[-1].path
        seed = decode_header(Path(seg).read_bytes()[:HEADER_SIZE]).seed
        for _ in range(40):
            wal.append(b"x" * 100)
        target = 50  # the LSN the forged frame claims; the real record 50 is b"y" * 100
        forged = bytes(
            encode_frames(
                seed=seed,
                first_lsn=target,
                record_type=0,
                timestamp_us=0,  # any stamp: reads do not look at it
                durable_lsn=0,
                payloads=[b"FORGED"],
                lengths=[6],
            )
        )
        carrier = wal.append(b"<" + forged + b">")
        while wal.next_lsn < 200:
            wal.append(b"y" * 100)
        wal.rotate()
    (info,) = sealed_segments(directory)
    at = Path(info.path).read_bytes().find(forged)
    assert carrier < target and at > 0
    _write_sidecar(info, [(info.first_lsn, HEADER_SIZE, 0), (target, at, 0)])
    with segwal.open(directory, readonly=True) as wal:
        try:
            record = wal.read(target)
        except segwal.CorruptionError:
            return
        assert record.payload == b"y" * 100


def test_wrong_stamps_in_a_sidecar_never_make_lsn_at_wrong(
    log_copy: tuple[str, dict[int, bytes], list[segwal.SegmentInfo]],
) -> None:
    directory, _expected, sealed = log_copy
    with segwal.open(directory, sync="never") as wal:
        truth = {
            ts: wal.lsn_at(ts)
            for info in sealed
            for ts in range(info.min_timestamp_us, info.max_timestamp_us + 1, 997)
        }
    for info in sealed:
        entries = entries_of(loaded_index(info))
        _write_sidecar(info, [(lsn, o, info.min_timestamp_us - 1) for lsn, o, _t in entries])
    with segwal.open(directory, sync="never") as wal:
        for ts, lsn in truth.items():
            with contextlib.suppress(segwal.CorruptionError):
                assert wal.lsn_at(ts) == lsn, ts


def test_index_is_used_a_point_read_does_not_scan_the_segment(tmp_path: Path) -> None:
    """A point read in a big sealed segment reads about one index interval, not the segment
    (counted through an injected file system)."""

    class CountingFS(OsFileSystem):
        def __init__(self) -> None:
            super().__init__()
            self.read_bytes = 0

        def open_read(self, path: str):  # type: ignore[no-untyped-def]
            handle = super().open_read(path)
            fs = self

            class Counting:
                def __getattr__(self, name: str) -> object:
                    return getattr(handle, name)

                def pread(self, size: int, offset: int) -> bytes:
                    data = handle.pread(size, offset)
                    if path.endswith(".wal"):
                        fs.read_bytes += len(data)
                    return data

            return Counting()

    directory = str(tmp_path / "wal")
    with segwal.open(directory, segment_bytes=4 << 20, sync="never") as wal:
        for _ in range(30):
            wal.append_batch([payload(wal.next_lsn + i, 100) for i in range(1000)])
        wal.rotate()
        last = wal.last_lsn
    fs = CountingFS()
    with segwal.open(directory, readonly=True, filesystem=fs) as wal:
        wal.read(last // 2)  # loads the sidecar
        fs.read_bytes = 0
        for lsn in random.Random(1).sample(range(1, last + 1), 50):
            assert wal.read(lsn).payload == payload(lsn, 100)
        per_read = fs.read_bytes / 50
    assert per_read < 256 << 10, per_read  # a segment is 4 MiB; an interval is 4 KiB
