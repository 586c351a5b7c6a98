"""Edges of format v2 found by review: each test failed before its fix.

- a full frame of incompressible records, encrypted, is 32 bytes longer than the largest
  plain frame: readers of a segment with feature flags accept it (it was called damage,
  and after a crash cut as a torn tail: acknowledged records lost);
- a compressed frame whose lengths table disagrees with its plain size is damage before a
  point read keeps it (a cached copy used to raise an untyped FormatError on every read);
- ``truncate_after(0)`` of an encrypted log keeps the log id its KEYS is bound to;
- a missing ``cryptography`` is ``UnsupportedFormatError`` with the install hint.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import lz4.block
import pytest

import segwal
from segwal.format.layout import FRAME_HEAD, crc32c, decode_header

ROOT = Path(__file__).resolve().parent.parent


def _child(code: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def test_a_full_encrypted_frame_survives_a_crash(tmp_path: Path) -> None:
    log, kek = tmp_path / "log", tmp_path / "kek"
    kek.write_bytes(os.urandom(32))
    _child(
        f"""
import os, segwal
wal = segwal.open({str(log)!r}, encryption_key=open({str(kek)!r}, 'rb').read(),
                  max_record_bytes=1024)
wal.append(b'first')
wal.append_batch([os.urandom(16) for _ in range(65536)])
wal.sync()
os._exit(0)  # no close: recovery reads the tail
"""
    )
    with segwal.open(log, encryption_key=kek.read_bytes(), max_record_bytes=1024) as wal:
        assert wal.last_lsn == 65537
        assert wal.read(65537).payload.__len__() == 16
        assert sum(1 for _ in wal.replay()) == 65537


def test_a_compressed_frame_whose_lengths_disagree_is_named_on_every_read(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log"
    with segwal.open(log, compression="lz4") as wal:
        wal.append_batch([b"a" * 300, b"b" * 300, b"c" * 300])
    path = next(p for p in log.iterdir() if p.name.endswith(".wal"))
    raw = bytearray(path.read_bytes())
    header = decode_header(bytes(raw[:128]))
    _, kind, flags, rtype, count, body, first, stamp, _ = FRAME_HEAD.unpack_from(raw, 128)
    (size,) = struct.unpack_from("<I", raw, 128 + FRAME_HEAD.size)
    start = 128 + FRAME_HEAD.size + 4
    plain = bytearray(lz4.block.decompress(bytes(raw[start : 128 + 40 + body]), size))
    struct.pack_into("<I", plain, 0, 301)  # the lengths add up to 901; the payloads are 900
    stored = struct.pack("<I", size) + lz4.block.compress(bytes(plain), store_size=False)
    frame = bytearray(FRAME_HEAD.pack(0, kind, flags, rtype, count, len(stored), first, stamp, 0))
    frame += stored
    struct.pack_into("<I", frame, 0, crc32c(memoryview(frame)[4:], header.seed))
    path.write_bytes(bytes(raw[:128] + frame))
    with segwal.open(log, readonly=True) as wal:
        for _ in range(3):  # the second and third reads must not find a cached copy
            with pytest.raises(segwal.CorruptionError, match="lengths disagree") as info:
                wal.read(1)
            assert (info.value.path, info.value.offset) == (str(path), 128)


def test_truncating_an_encrypted_log_to_nothing_keeps_it_writable(tmp_path: Path) -> None:
    log, key = tmp_path / "log", os.urandom(32)
    with segwal.open(log, encryption_key=key) as wal:
        for _ in range(5):
            wal.append(b"x" * 10)
        wal.truncate_after(0)
        assert wal.append(b"y") == 1
    with segwal.open(log, encryption_key=key) as wal:
        assert [r.payload for r in wal.replay()] == [b"y"]


def test_a_missing_cryptography_is_a_typed_error(tmp_path: Path) -> None:
    log, key = tmp_path / "log", os.urandom(32)
    with segwal.open(log, encryption_key=key) as wal:
        wal.append(b"x")
    code = f"""
import sys
sys.modules['cryptography'] = None
import segwal
for call in (lambda: segwal.open({str(log)!r}, encryption_key={key!r}),
             lambda: segwal.rotate_keys({str(log)!r}, segwal.RawKey({key!r}), new_log_key=True)):
    try:
        call()
    except segwal.UnsupportedFormatError as exc:
        assert 'pip install' in str(exc), exc
    else:
        raise SystemExit('no error')
"""
    _child(code)
