"""``Wal.replay_frames``: ``replay``'s records, one item per stored frame.

Every test holds it to ``replay`` on the same log: the same records in the same order, the
same bounds, the same errors. The grouping into frames is the writer's; the tests check only
what the API promises of it (each item is a run of consecutive LSNs sharing a type and a
timestamp, none empty).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import segwal
import segwal.aio
from segwal import FrameRecords, Record, Wal
from segwal.errors import ArgumentTypeError, ChecksumError, ReaderFellBehindError
from strategies import payload_lists, record_types


def _flat(frames: list[FrameRecords]) -> list[Record]:
    return [record for frame in frames for record in frame.records()]


def _outcome(items: Iterator[Any]) -> tuple[list[Record], str]:
    """The records an iteration yields before it stops, and the error it stops with."""
    got: list[Record] = []
    try:
        for item in items:
            got.extend(item.records() if isinstance(item, FrameRecords) else [item])
    except Exception as exc:
        return got, type(exc).__name__
    return got, ""


def _check_shape(frames: list[FrameRecords]) -> None:
    for frame in frames:
        assert type(frame) is FrameRecords
        assert frame.payloads and all(type(p) is bytes for p in frame.payloads)
        assert frame.last_lsn == frame.first_lsn + len(frame.payloads) - 1
    for before, after in pairwise(frames):
        assert after.first_lsn == before.last_lsn + 1


def _same(wal: Wal, start: int | None, stop: int | None, unsynced: bool = False) -> None:
    frames = list(wal.replay_frames(start, stop, unsynced=unsynced))
    _check_shape(frames)
    assert _flat(frames) == list(wal.replay(start, stop, unsynced=unsynced))


batches = st.lists(
    st.tuples(payload_lists, record_types, st.booleans(), st.booleans()), min_size=1, max_size=12
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=batches,
    bounds=st.tuples(
        st.one_of(st.none(), st.integers(min_value=-2, max_value=200)),
        st.one_of(st.none(), st.integers(min_value=-2, max_value=200)),
    ),
    unsynced=st.booleans(),
    codec=st.sampled_from(["plain", "zstd"]),
)
def test_hypothesis_the_same_records_as_replay(
    tmp_path_factory: pytest.TempPathFactory,
    batches: list[tuple[list[bytes], int, bool, bool]],
    bounds: tuple[int | None, int | None],
    unsynced: bool,
    codec: str,
) -> None:
    """Random batches, rotations and syncs, random bounds (past either end, reversed): the
    frames flatten to exactly what replay yields, durable only unless ``unsynced``."""
    path = tmp_path_factory.mktemp("frames")
    options: dict[str, Any] = {"compression": "zstd"} if codec == "zstd" else {}
    with segwal.open(path, sync="never", **options) as wal:
        for payloads, kind, rotate, sync in batches:
            if len(payloads) == 1:
                wal.append(payloads[0], type=kind)
            else:
                wal.append_batch(payloads, type=kind)
            if sync:
                wal.sync()
            if rotate:
                wal.rotate()
        _same(wal, *bounds, unsynced=unsynced)
        _same(wal, None, None, unsynced=unsynced)
        wal.sync()
        with segwal.open(path, readonly=True) as view:
            assert _flat(list(view.replay_frames(*bounds))) == list(view.replay(*bounds))


def test_a_batch_is_one_frame_cut_to_the_bounds(tmp_path: Path) -> None:
    with segwal.open(tmp_path, sync="always") as wal:
        wal.append_batch([b"a%d" % i for i in range(10)], type=7)
        wal.append(b"single")
        frames = list(wal.replay_frames(4, 11))
        assert [(f.first_lsn, f.type, len(f.payloads)) for f in frames] == [(4, 7, 7), (11, 0, 1)]
        assert frames[0].payloads == [b"a%d" % i for i in range(3, 10)]
        assert frames[1].payloads == [b"single"]
        assert list(wal.replay_frames(12)) == []
        assert list(wal.replay_frames(5, 4)) == []


def test_only_durable_records_unless_unsynced(tmp_path: Path) -> None:
    with segwal.open(tmp_path, sync="never") as wal:
        wal.append_batch([b"x"] * 5)
        wal.sync()
        wal.append_batch([b"y"] * 5)
        assert _flat(list(wal.replay_frames())) == list(wal.replay())
        assert [f.last_lsn for f in wal.replay_frames()] == [5]
        assert [f.last_lsn for f in wal.replay_frames(unsynced=True)] == [5, 10]


def test_the_range_is_fixed_when_called(tmp_path: Path) -> None:
    with segwal.open(tmp_path, sync="always") as wal:
        wal.append_batch([b"a"] * 3)
        frames = wal.replay_frames()
        wal.append_batch([b"b"] * 3)
        assert [f.last_lsn for f in frames] == [3]


@pytest.mark.parametrize("codec", ["encrypted", "zstd"])
def test_version_2_frames(tmp_path: Path, codec: str) -> None:
    options: dict[str, Any] = (
        {"encryption_key": os.urandom(32)} if codec == "encrypted" else {"compression": "zstd"}
    )
    with segwal.open(tmp_path, sync="always", **options) as wal:
        for i in range(5):
            wal.append_batch([bytes([i]) * 300] * 40)
            if i == 2:
                wal.rotate()
        _same(wal, None, None)
        _same(wal, 37, 161)


def test_damage_is_raised_where_replay_raises_it(tmp_path: Path) -> None:
    with segwal.open(tmp_path, sync="always") as wal:
        for i in range(4):
            wal.append_batch([b"%03d" % i + b"-" * 97] * 10)
        # Damaged after open: a stream checks every frame again as it reads it.
        segment = next(tmp_path.glob("*.wal"))
        data = bytearray(segment.read_bytes())
        data[data.find(b"002" + b"-" * 97) + 50] ^= 0xFF
        segment.write_bytes(bytes(data))
        frames = _outcome(wal.replay_frames())
        records = _outcome(wal.replay())
        assert frames == records
        assert frames[1] == ChecksumError.__name__ and len(frames[0]) == 20


def test_a_rewind_while_paused_stops_it_as_it_stops_replay(tmp_path: Path) -> None:
    outcomes = []
    for frames in (True, False):
        path = tmp_path / str(frames)
        with segwal.open(path, sync="always") as wal:
            for i in range(4):
                wal.append_batch([b"%d" % i] * 10)
            wal.rotate()
            wal.append_batch([b"late"] * 10)
            stream: Iterator[Any] = wal.replay_frames() if frames else wal.replay()
            first = next(stream)
            wal.truncate_after(15)
            wal.append_batch([b"new"] * 30)
            got, error = _outcome(stream)
            head = first.records() if isinstance(first, FrameRecords) else [first]
            outcomes.append(([r.lsn for r in head + got], error))
    assert outcomes[0][1] == outcomes[1][1] == ReaderFellBehindError.__name__
    assert outcomes[0][0] == outcomes[1][0] == list(range(1, 16))


@pytest.mark.parametrize(
    ("args", "kwargs"), [(("1",), {}), ((1, 2.0), {}), ((), {"unsynced": 1}), ((True,), {})]
)
def test_arguments_are_checked_as_replay_checks_them(
    tmp_path: Path, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with segwal.open(tmp_path) as wal:
        wal.append(b"x")
        with pytest.raises(ArgumentTypeError):
            wal.replay(*args, **kwargs)
        with pytest.raises(ArgumentTypeError):
            wal.replay_frames(*args, **kwargs)


def test_asyncio_replay_frames_pages_whole_frames(tmp_path: Path) -> None:
    async def run() -> tuple[list[FrameRecords], list[Record]]:
        async with segwal.aio.open(tmp_path) as wal:
            for i in range(30):
                await wal.append_batch([bytes([i]) * 100] * 50)
            frames = [f async for f in wal.replay_frames(20, 1400, max_bytes=12_000)]
            records = [r async for r in wal.replay(20, 1400)]
            return frames, records

    frames, records = asyncio.run(run())
    _check_shape(frames)
    assert _flat(frames) == records
    assert frames[0].first_lsn == 20 and frames[-1].last_lsn == 1400


def test_asyncio_replay_frames_falls_behind_retention(tmp_path: Path) -> None:
    async def run() -> None:
        async with segwal.aio.open(tmp_path) as wal:
            for _ in range(4):
                await wal.append_batch([b"p" * 100] * 50)
                await wal.rotate()
            frames = wal.replay_frames(max_bytes=1)
            first = await frames.__anext__()
            assert first.first_lsn == 1
            await wal.truncate_before(151)
            with pytest.raises(ReaderFellBehindError):
                await frames.__anext__()

    asyncio.run(run())
