"""The read path of encrypted logs (format v2): what its speed-ups must not change.

- Replay decrypts every encrypted frame of a segment into one buffer it reuses
  (``FrameOpener``); records are copied out of it before the next frame is opened, so
  records kept by the caller never change under it, whether frames grow or shrink, with
  compression or without, even when every frame's iterator is taken before any is read,
  on the compiled and the pure-Python decoder (which streams plain frames lazily: a body
  in the reused buffer must be decoded at once).
- A point read keeps its frame (the frame cache): its body is never that buffer.
- With the key at hand, an encrypted frame's CRC is left to its authentication tag, which
  covers every byte the CRC does but the CRC field itself; damage is still reported
  exactly as when the CRC was checked first (a checksum mismatch naming file, offset and
  LSN; an authentication error under a forged CRC), and a damaged CRC field alone, which
  leaves the records authentic, is reported by ``verify`` and recovery, which check CRCs.
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import segwal
from cipherkeys import CounterKeys
from segwal.errors import AuthenticationError
from segwal.format.features import FRAME_ENCRYPTED
from segwal.format.layout import (
    FRAME_HEAD,
    FRAME_HEAD_SIZE,
    HEADER_SIZE,
    KIND_RECORDS,
    crc32c,
    decode_header,
)
from segwal.format.scanner import Status, check
from segwal.log.config import WalConfig
from segwal.storage.coding import Coding
from segwal.storage.fileio import OsFileSystem
from segwal.storage.framereads import iter_records
from segwal.storage.segment import read_header
from segwal.types import Record

ROOT = Path(__file__).resolve().parent.parent
KEK = bytes(range(32))


def _batches(seed: int) -> list[list[bytes]]:
    """Batches whose frames grow and shrink (the buffer is grown, then reused smaller)."""
    rng = random.Random(seed)
    sizes = [1, 64, 3, 200, 2, 1000, 5, 17]
    return [[rng.randbytes(rng.randrange(0, 700)) for _ in range(n)] for n in sizes * 3]


def _write(log: Path, **options: object) -> list[bytes]:
    payloads: list[bytes] = []
    with segwal.open(log, encryption_key=KEK, segment_bytes=64 << 10, **options) as wal:  # type: ignore[arg-type]
        for batch in _batches(7):
            wal.append_batch(batch)
            payloads += batch
    return payloads


@pytest.mark.parametrize("compression", [None, "lz4", "zstd"])
def test_replayed_records_outlive_the_decrypt_buffer(
    tmp_path: Path, compression: str | None
) -> None:
    log = tmp_path / "log"
    payloads = _write(log, compression=compression)
    assert len([p for p in log.iterdir() if p.name.endswith(".wal")]) > 1  # several segments
    with segwal.open(log, encryption_key=KEK, readonly=True) as wal:
        kept = list(wal.replay())  # every record held while later frames are decrypted
        assert [r.payload for r in kept] == payloads
        assert [r.lsn for r in kept] == list(range(1, len(payloads) + 1))
        # Interleaved: two replays at once, each with its own buffer.
        first, second = wal.replay(), wal.replay(from_lsn=len(payloads) // 2)
        pairs = list(zip(first, second, strict=False))
        assert all(a.payload == payloads[a.lsn - 1] for a, _ in pairs)
        assert all(b.payload == payloads[b.lsn - 1] for _, b in pairs)


def test_point_reads_keep_their_own_frames(tmp_path: Path) -> None:
    log = tmp_path / "log"
    payloads = _write(log)
    with segwal.open(log, encryption_key=KEK, readonly=True) as wal:
        lsns = random.Random(3).sample(range(1, len(payloads) + 1), 200)
        got = {lsn: wal.read(lsn) for lsn in lsns}
        for _record in wal.replay():  # replays decrypt into their buffer meanwhile
            pass
        assert all(got[lsn].payload == payloads[lsn - 1] for lsn in lsns)
        assert all(wal.read(lsn).payload == payloads[lsn - 1] for lsn in lsns)  # cached


def _frame_iterators(log: Path, keys: CounterKeys, last_lsn: int) -> tuple[int, list[list[Record]]]:
    """Every segment's per-frame record iterators, all taken before any is consumed (the
    API allows it), then consumed: each frame's records must still be its own."""
    fs = OsFileSystem()
    out: list[list[Record]] = []
    frames = 0
    names = sorted(p.name for p in log.iterdir() if p.name.endswith(".wal"))
    lasts = [int(n[:20]) - 1 for n in names[1:]] + [last_lsn]
    for name, last in zip(names, lasts, strict=True):
        handle = fs.open_read(str(log / name))
        try:
            header = read_header(handle)
            end = handle.size()
            held = list(
                iter_records(
                    handle,
                    header,
                    start=HEADER_SIZE,
                    end=end,
                    first_lsn=header.first_lsn,
                    from_lsn=header.first_lsn,
                    to_lsn=last,
                    coding=Coding(None, keys),
                )
            )
        finally:
            handle.close()
        frames += len(held)
        out += [list(records) for records in held]
    return frames, out


@pytest.mark.parametrize("compression", [None, "lz4"])
def test_frame_iterators_taken_before_they_are_read(
    tmp_path: Path, compression: str | None
) -> None:
    log = tmp_path / "log"
    keys = CounterKeys()
    payloads: list[bytes] = []
    config = WalConfig(keys=keys, segment_bytes=64 << 10, compression=compression)
    with segwal.Wal(str(log), config) as wal:
        for batch in _batches(11):
            wal.append_batch(batch)
            payloads += batch
    frames, held = _frame_iterators(log, keys, len(payloads))
    assert frames > 10
    assert [r.payload for records in held for r in records] == payloads


# The child checks which decoder it got before running anything.
CHILD = """
import sys
import pytest
from segwal.format import records
if records.decode_records is not records.decode_records_py:
    sys.exit("the child runs the compiled decoder, not the pure one")
sys.exit(pytest.main(sys.argv[1:]))
"""


def test_the_pure_python_decoder_reads_the_same() -> None:
    """The pure decoder streams plain frames lazily; a body in the reused buffer must be
    decoded at once all the same (the tests above, rerun on it)."""
    env = {**os.environ, "SEGWAL_PURE_PYTHON": "1"}
    env.pop("SEGWAL_PURE", None)
    env.pop("PYTEST_ADDOPTS", None)
    args = [sys.executable, "-c", CHILD, "-q", "-p", "no:cacheprovider", __file__]
    args += ["-k", "not pure_python", "-o", "console_output_style=classic"]
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    tail = (result.stdout[-3000:] + result.stderr[-2000:]).strip()
    assert result.returncode == 0, f"the pure-Python run failed:\n{tail}"
    assert " passed" in result.stdout and "skipped" not in result.stdout, tail


# -- damage: the CRC of an encrypted frame is left to its tag on the read path ---------------


def _damaged_log(tmp_path: Path) -> tuple[Path, Path, list[bytes], list[tuple[int, int, int]]]:
    """A closed encrypted log of several sealed segments; its first segment's path and its
    frames as (offset, length, first LSN)."""
    log = tmp_path / "log"
    payloads = _write(log)
    first = log / sorted(p.name for p in log.iterdir() if p.name.endswith(".wal"))[0]
    data = first.read_bytes()
    frames, pos = [], HEADER_SIZE
    while pos + FRAME_HEAD_SIZE <= len(data) and data[pos + 4] == KIND_RECORDS:
        head = FRAME_HEAD.unpack_from(data, pos)
        assert head[2] & FRAME_ENCRYPTED
        frames.append((pos, FRAME_HEAD_SIZE + head[5], head[6]))
        pos += FRAME_HEAD_SIZE + head[5]
    assert len(frames) >= 3
    return log, first, payloads, frames


def _change(path: Path, at: int, *, fix_crc_of: tuple[int, int] | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x10
    if fix_crc_of is not None:  # forge: a valid CRC over the changed bytes
        pos, length = fix_crc_of
        seed = decode_header(bytes(data[:HEADER_SIZE])).seed
        struct.pack_into("<I", data, pos, crc32c(bytes(data[pos + 4 : pos + length]), seed))
    path.write_bytes(bytes(data))


def _read_errors(log: Path, lsn: int, payloads: list[bytes]) -> list[BaseException]:
    """What replay and a point read of ``lsn`` raise (replay's records before the damage
    must be the written ones)."""
    errors: list[BaseException] = []
    with segwal.open(log, encryption_key=KEK, readonly=True) as wal:
        try:
            for record in wal.replay():
                assert record.payload == payloads[record.lsn - 1]
        except segwal.SegwalError as exc:
            errors.append(exc)
        try:
            wal.read(lsn)
        except segwal.SegwalError as exc:
            errors.append(exc)
    return errors


def _as_before(exc: BaseException, path: Path, offset: int, lsn: int) -> None:
    """The error a CRC checked first gives: ChecksumError (not AuthenticationError), the
    scanner's reason, the frame's file, offset and first LSN."""
    assert type(exc) is segwal.ChecksumError, repr(exc)
    assert (exc.path, exc.offset, exc.lsn) == (str(path), offset, lsn)
    assert "frame checksum mismatch" in str(exc)


@pytest.mark.parametrize(
    "where",
    [
        "ciphertext",  # authentication fails, then the CRC does
        "tag",
        "nonce",
        "timestamp",  # a head field (associated data)
        "first_lsn",  # fails continuity before authentication: the CRC is asked first
        "body_len",  # fails the plain size check in the scanner: the CRC is asked first
    ],
)
def test_damage_with_a_stale_crc_is_a_checksum_mismatch_as_before(
    tmp_path: Path, where: str
) -> None:
    log, path, payloads, frames = _damaged_log(tmp_path)
    pos, length, first = frames[1]
    at = {
        "ciphertext": pos + FRAME_HEAD_SIZE + 16 + 3,
        "tag": pos + length - 1,
        "nonce": pos + FRAME_HEAD_SIZE + 4 + 5,
        "timestamp": pos + 24,
        "first_lsn": pos + 16,
        "body_len": pos + 12,
    }[where]
    _change(path, at)
    data = path.read_bytes()
    header = decode_header(data[:HEADER_SIZE])
    verdict = check(data, pos, len(data), header.seed, 1 << 30, header.flags)
    assert verdict.status is Status.BAD and verdict.reason == "frame checksum mismatch"
    errors = _read_errors(log, first, payloads)
    assert len(errors) == 2
    for exc in errors:
        _as_before(exc, path, pos, first)
    report = segwal.verify(log)
    assert not report.ok and report.problems[0].offset == pos


def test_damage_under_a_forged_crc_fails_authentication_as_before(tmp_path: Path) -> None:
    log, path, payloads, frames = _damaged_log(tmp_path)
    pos, length, first = frames[1]
    _change(path, pos + FRAME_HEAD_SIZE + 16 + 3, fix_crc_of=(pos, length))
    errors = _read_errors(log, first, payloads)
    assert len(errors) == 2
    for exc in errors:
        assert type(exc) is AuthenticationError, repr(exc)
        assert (exc.path, exc.offset, exc.lsn) == (str(path), pos, first)
    assert not segwal.verify(log, encryption_key=KEK).ok


def test_a_flipped_crc_byte_is_reported_where_crcs_are_checked(tmp_path: Path) -> None:
    """Only the CRC field lies outside the tag. A reader with the key gets the authentic
    records; verify (key or not) and recovery, which check every CRC, report it as before."""
    log, path, payloads, frames = _damaged_log(tmp_path)
    pos, _length, first = frames[1]
    _change(path, pos + 2)
    assert _read_errors(log, first, payloads) == []
    for key in (None, KEK):
        report = segwal.verify(log, encryption_key=key)
        assert not report.ok
        problem = report.problems[0]
        assert (problem.path, problem.offset) == (str(path), pos)
        assert "checksum mismatch" in problem.reason


def test_a_flipped_crc_byte_in_the_tail_stops_a_scanning_open(tmp_path: Path) -> None:
    """A scanning open checks the active segment's CRCs: a damaged CRC with intact frames
    after it is corruption at open, with the key or not. (A writer's open after a clean
    close trusts the mark instead and reads with the tag, which authenticates every byte
    but the CRC field: it returns the authentic records, and verify names the damage.)"""
    log = tmp_path / "log"
    with segwal.open(log, encryption_key=KEK) as wal:
        for i in range(6):
            wal.append_batch([b"record %d" % i] * 5)
    path = log / sorted(p.name for p in log.iterdir() if p.name.endswith(".wal"))[-1]
    data = path.read_bytes()
    second = HEADER_SIZE + FRAME_HEAD_SIZE + FRAME_HEAD.unpack_from(data, HEADER_SIZE)[5]
    _change(path, second + 1)
    with pytest.raises(segwal.CorruptionError, match="checksum mismatch") as caught:
        segwal.open(log, encryption_key=KEK, readonly=True)
    assert (caught.value.path, caught.value.offset) == (str(path), second)
    with segwal.open(log, encryption_key=KEK) as wal:
        assert [r.payload for r in wal.replay()] == [
            b"record %d" % i for i in range(6) for _ in range(5)
        ]
    report = segwal.verify(log)
    assert not report.ok and any(p.offset == second for p in report.problems)


def test_only_encrypted_frames_have_their_crc_deferred(tmp_path: Path) -> None:
    """``check(..., defer_crc=True)`` still checks the CRC of a frame that no tag covers."""
    log = tmp_path / "log"
    with segwal.open(log, compression="lz4") as wal:
        wal.append_batch([b"x" * 300] * 4)  # compressed, not encrypted
        wal.append(b"plain")  # a version 1 frame
    path = log / sorted(p.name for p in log.iterdir() if p.name.endswith(".wal"))[0]
    data = bytearray(path.read_bytes())
    header = decode_header(bytes(data[:HEADER_SIZE]))
    pos, seen = HEADER_SIZE, 0
    while pos + FRAME_HEAD_SIZE <= len(data) and data[pos + 4] == KIND_RECORDS:
        seen += 1
        whole = check(data, pos, len(data), header.seed, 1 << 30, header.flags, defer_crc=True)
        assert whole.frame is not None and not whole.frame.crc_deferred
        data[pos + 1] ^= 1
        bad = check(data, pos, len(data), header.seed, 1 << 30, header.flags, defer_crc=True)
        assert bad.status is Status.BAD and bad.reason == "frame checksum mismatch"
        data[pos + 1] ^= 1
        pos = whole.frame.end
    assert seen == 2
