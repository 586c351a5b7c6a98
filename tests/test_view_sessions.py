"""Readers that outlive a change of history (found by review of the read path):

* a readonly view's frame cache across a new writer's recovery, which cuts a rotted last
  batch in place and writes other records under the same LSNs without a rewind;
* a readonly view across a rewind that rewrites a sealed segment and seals it again at the
  same size (a new file under the old name);
* ``segwal.aio`` replay and replay_frames across a ``truncate_after`` between two pages.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import segwal
import segwal.aio
from segwal.format.framing import max_frame_bytes
from segwal.format.layout import HEADER_SIZE, decode_header
from segwal.format.scanner import Status, check


def _frames(path: Path) -> list[tuple[int, int]]:
    data = path.read_bytes()
    head = decode_header(data)
    limit = max_frame_bytes(head.max_record_bytes, head.flags)
    pos, out = HEADER_SIZE, list[tuple[int, int]]()
    while True:
        verdict = check(data, pos, len(data), head.seed, limit, head.flags)
        if verdict.status is not Status.FRAME or verdict.frame is None:
            return out
        out.append((pos, verdict.frame.length))
        pos += verdict.frame.length


@pytest.mark.parametrize("mode", ["tolerate_tail", "truncate"])
def test_a_view_never_serves_cached_bytes_a_new_writers_recovery_replaced(
    tmp_path: Path, mode: str
) -> None:
    pid = os.fork()
    if pid == 0:  # a writer killed without closing: LSNs 1..30 acknowledged
        try:
            wal = segwal.open(tmp_path, sync="always")
            for i in range(3):
                wal.append_batch([b"old-%d" % (10 * i + j + 1) for j in range(10)])
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    view = segwal.open(tmp_path, readonly=True)
    assert view.read(25).payload == b"old-25"  # now in the view's frame cache
    (segment,) = tmp_path.glob("*.wal")
    offset, length = _frames(segment)[2 if mode == "tolerate_tail" else 1]
    with open(segment, "r+b") as f:  # bit rot in the last (or a middle) batch
        f.seek(offset + length - 2)
        byte = f.read(1)[0]
        f.seek(offset + length - 2)
        f.write(bytes([byte ^ 1]))
    writer = segwal.open(tmp_path, sync="always", recovery=mode)  # type: ignore[arg-type]
    base = writer.last_lsn + 1
    assert base <= 25 and writer.rewinds == view.rewinds
    writer.append_batch([b"NEW-%d" % (base + i) for i in range(30)])
    assert writer.read(25).payload == b"NEW-25"
    assert view.read(25).payload == b"NEW-25"
    assert [r.payload for r in view.replay(25, 25)] == [b"NEW-25"]
    writer.close()
    view.close()


def test_a_view_sees_a_sealed_segment_rewritten_and_sealed_again_at_the_same_size(
    tmp_path: Path,
) -> None:
    writer = segwal.open(tmp_path, sync="always")
    writer.append_batch([b"old-%02d" % i for i in range(1, 6)])
    writer.append_batch([b"old-%02d" % i for i in range(6, 11)])
    writer.rotate()
    writer.append_batch([b"old-%02d" % i for i in range(11, 16)])
    view = segwal.open(tmp_path, readonly=True)
    assert view.read(8).payload == b"old-08"
    first = sorted(tmp_path.glob("*.wal"))[0]
    size, inode = first.stat().st_size, first.stat().st_ino
    writer.truncate_after(5)
    writer.append_batch([b"NEW-%02d" % i for i in range(6, 11)])
    writer.rotate()
    assert first.stat().st_size == size and first.stat().st_ino != inode
    for _ in range(2):
        assert view.read(8).payload == b"NEW-08"
        assert [r.payload for r in view.replay(6, 10)] == [b"NEW-%02d" % i for i in range(6, 11)]
        view.refresh()
    writer.close()
    view.close()


@pytest.mark.parametrize("kind", ["records", "frames"])
def test_aio_replay_raises_when_a_rewind_replaces_what_it_yielded(
    tmp_path: Path, kind: str
) -> None:
    async def main() -> None:
        async with segwal.aio.open(tmp_path, sync="always") as wal:
            for i in range(4):
                await wal.append_batch([b"old%d" % (10 * i + j) for j in range(10)])
            got: list[segwal.Record] = []
            if kind == "frames":
                pages = (f.records() async for f in wal.replay_frames(max_bytes=1))
            else:
                pages = ([r] async for r in wal.replay(max_records=10))
            with pytest.raises(segwal.ReaderFellBehindError):
                async for records in pages:
                    got.extend(records)
                    if len(got) == 10:
                        await wal.truncate_after(5)  # LSNs 6..10, already yielded, replaced
                        await wal.append_batch([b"NEW%d" % j for j in range(35)])
            assert all(r.payload.startswith(b"old") for r in got)

    asyncio.run(main())
