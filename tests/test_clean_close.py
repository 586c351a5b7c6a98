"""Bit rot after a clean close is corruption, never a torn tail (issue 13, #1).

A clean ``close()`` records in META how far the active segment is durable (its name, end
offset and last LSN). A crash cannot tear what a clean close made durable, so damage before
that point is never cut as a torn write: after a clean close the ambiguity window is empty.
The writer's next open trusts the mark (with the facts and index sidecar the close saved)
instead of scanning the segment, so such damage is raised by the read that meets it, by
``verify``, and by any open that scans (readonly, or the mark's sidecar gone); it is never
cut. Appends after a reopen, a rewind, and recovery's own cuts keep the mark honest.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import segwal
from conftest import forget_clean_close
from helpers_logs import read_frames, segment_files, xor_byte
from segwal.format.meta import decode as decode_meta


def _the_issues_log(path: Path) -> None:
    """sync="never", batches, one sync(), close(): 400 records, every one durable."""
    with segwal.open(path, sync="never", segment_bytes=1 << 20) as wal:
        for i in range(40):
            wal.append_batch([b"record %d-%d" % (i, j) for j in range(10)])
            if i == 20:
                wal.sync()


def test_bit_rot_in_the_middle_of_the_active_segment_after_a_clean_close(tmp_path: Path) -> None:
    path = tmp_path / "log"
    _the_issues_log(path)
    last = segment_files(path)[-1]
    frames, _ = read_frames(last)
    window = [f for f in frames if f.first_lsn > 210]  # written after the sync()
    rotten = window[len(window) // 2]
    xor_byte(last, rotten.end - 3)  # bit rot in a durable record
    before = last.read_bytes()
    # The writer's open trusts the clean close and reads no frame; the read names the damage.
    with segwal.open(path) as wal:
        assert wal.last_lsn == 400 and not wal.recovery.cuts
        assert wal.read(rotten.first_lsn - 1).lsn == rotten.first_lsn - 1
        with pytest.raises(segwal.CorruptionError) as info:
            wal.read(rotten.first_lsn)
        assert info.value.path == str(last) and info.value.offset == rotten.offset
        with pytest.raises(segwal.CorruptionError):
            list(wal.replay(1))
    assert last.read_bytes() == before  # nothing was cut
    # An open that scans (readonly) raises it, as bit rot, not a torn tail.
    with pytest.raises(segwal.CorruptionError) as info:
        segwal.open(path, readonly=True)
    assert info.value.path == str(last) and "clean close" in str(info.value)
    report = segwal.verify(path)
    assert not report.ok and [p.kind for p in report.problems] == ["corruption"]
    # Without its sidecar the writer's open scans too, and raises.
    (path / (last.name + ".idx")).unlink()
    with pytest.raises(segwal.CorruptionError) as info:
        segwal.open(path)
    assert info.value.path == str(last) and "clean close" in str(info.value)
    # The same damage without the mark (a killed writer) is the torn tail it always was.
    forget_clean_close(path)
    with segwal.open(path) as wal:
        assert wal.recovery.torn_tail


def test_sealing_a_rotten_segment_does_not_bless_it(tmp_path: Path) -> None:
    """Bit rot the trusting open did not see, sealed over by a rotation: the seal's digest
    covers the rotten bytes, but every frame's checksum still names them when read, and
    verify checks frames, not only digests."""
    path = tmp_path / "log"
    _the_issues_log(path)
    last = segment_files(path)[-1]
    frames, _ = read_frames(last)
    rotten = frames[len(frames) // 2]
    xor_byte(last, rotten.end - 3)
    with segwal.open(path) as wal:
        wal.append(b"after")
        wal.rotate()
        wal.append(b"next segment")
        with pytest.raises(segwal.CorruptionError) as info:
            wal.read(rotten.first_lsn)
        assert info.value.path == str(last) and info.value.offset == rotten.offset
    with segwal.open(path) as wal:  # sealed segments are not scanned at open, as always
        assert wal.last_lsn == 402
        with pytest.raises(segwal.CorruptionError):
            list(wal.replay(1))
    report = segwal.verify(path)
    assert not report.ok
    assert [(p.path, p.kind) for p in report.problems] == [(str(last), "corruption")]


def test_after_a_clean_close_the_ambiguity_window_is_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Flip bits in every byte of the frames written after the last sync (the window of a
    killed writer): with the mark, every one is raised; none is cut."""
    path = tmp_path / "log"
    _the_issues_log(path)
    last = segment_files(path)[-1]
    frames, _ = read_frames(last)
    synced = 21 * 10  # LSNs written before the sync()
    window = [f for f in frames if f.first_lsn > synced]
    start, end = window[0].offset, window[-1].end
    original = last.read_bytes()
    raised = cut = 0
    for offset in range(start, end, 7):
        data = bytearray(original)
        data[offset] ^= 0x40
        last.write_bytes(bytes(data))
        try:
            with segwal.open(path, readonly=True) as wal:
                cut += bool(wal.recovery.cuts)
        except segwal.CorruptionError:
            raised += 1
    last.write_bytes(original)
    cases = len(range(start, end, 7))
    with capsys.disabled():
        print(f"\nclean close: {cases} flips in the former window, {raised} raised, {cut} cut")
    assert raised == cases and cut == 0


def test_appends_after_a_reopen_can_still_tear(tmp_path: Path) -> None:
    path = tmp_path / "log"
    _the_issues_log(path)
    crash = tmp_path / "crash"
    with segwal.open(path, sync="never") as wal:
        marked = decode_meta((path / "META").read_bytes(), "META").closed
        assert marked is not None
        wal.append_batch([b"after the reopen"] * 5)
        wal.sync()
        shutil.copytree(path, crash)  # the machine dies here: the old mark is in META
    last = segment_files(crash)[-1]
    frames, _ = read_frames(last)
    assert frames[-1].offset >= marked.end
    xor_byte(last, frames[-1].end - 1)
    with segwal.open(crash) as wal:  # torn after the mark: cut, as a crash can leave it
        assert wal.recovery.torn_tail and wal.last_lsn == 400


def test_a_rewind_clears_the_mark(tmp_path: Path) -> None:
    path = tmp_path / "log"
    _the_issues_log(path)
    with segwal.open(path) as wal:
        wal.truncate_after(300)
        meta = decode_meta((path / "META").read_bytes(), "META")
        assert meta.closed is None and meta.rewinds == 1
    meta = decode_meta((path / "META").read_bytes(), "META")
    assert meta.closed is not None and meta.closed.lsn == 300


def test_truncate_mode_cuts_and_forgets_the_mark(tmp_path: Path) -> None:
    path = tmp_path / "log"
    _the_issues_log(path)
    last = segment_files(path)[-1]
    xor_byte(last, last.stat().st_size - 5)
    with segwal.open(path, recovery="truncate") as wal:
        assert wal.recovery.cuts and wal.last_lsn < 400
        kept = wal.last_lsn
    with segwal.open(path) as wal:  # the mark now describes the cut segment, not the old
        assert wal.last_lsn == kept and not wal.recovery.cuts


def test_an_open_and_close_that_wrote_nothing_leave_the_files_alone(tmp_path: Path) -> None:
    path = tmp_path / "log"
    _the_issues_log(path)
    forget_clean_close(path)
    before = {p.name: p.read_bytes() for p in path.iterdir() if p.name != "LOCK"}
    with segwal.open(path):
        pass
    assert {p.name: p.read_bytes() for p in path.iterdir() if p.name != "LOCK"} == before


@pytest.mark.parametrize(
    "closed",
    [
        '"x"',
        "[1, 2, 3]",
        '["LOCK", 200, 1]',
        '["00000000000000000001.wal", 5, 1]',
        '["00000000000000000001.wal", 200, -1]',
        '["00000000000000000001.wal", true, 1]',
        '["00000000000000000001.wal", 200]',
    ],
)
def test_a_bad_mark_is_a_damaged_meta(tmp_path: Path, closed: str) -> None:
    import json

    from segwal.format.layout import crc32c
    from segwal.format.meta import HEAD, MAGIC

    path = tmp_path / "log"
    _the_issues_log(path)
    body = json.loads((path / "META").read_bytes()[HEAD.size :])
    body["closed"] = json.loads(closed)
    raw = json.dumps(body).encode()
    (path / "META").write_bytes(HEAD.pack(MAGIC, len(raw), crc32c(raw)) + raw)
    files = {p.name: p.read_bytes() for p in path.iterdir()}
    with pytest.raises(segwal.CorruptionError, match="META"):
        segwal.open(path)
    assert {p.name: p.read_bytes() for p in path.iterdir() if p.name != "LOCK"} == {
        k: v for k, v in files.items() if k != "LOCK"
    }
