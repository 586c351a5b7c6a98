"""Damage to compressed and encrypted logs (format v2): a sweep of single bit flips (the
corruption matrix's first fault class) and a hypothesis fuzz of frames rewritten with a
valid CRC (what only authentication can catch).

The promise is the one of version 1: every outcome is a clean open with a reported cut,
or a typed ``SegwalError`` naming the damage (``AuthenticationError`` for an encrypted
frame whose CRC was forged); records returned are the reference's, byte for byte, and no
input makes segwal crash, allocate more than a frame, or hang. Reference logs are written
by segwal on the in-memory file system, once per process.
"""

from __future__ import annotations

import functools
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import segwal
from cipherkeys import CounterKeys
from fuzz_target import make_fs
from segwal.format.features import FRAME_ENCRYPTED
from segwal.format.layout import FRAME_HEAD, crc32c, decode_header
from segwal.log.config import WalConfig
from segwal.testing import MemoryFileSystem

LOG = "/log"
FLAVOURS = ("zstd", "zstd+aes", "lz4+aes")
Files = dict[str, bytes]


def _options(flavour: str) -> dict[str, object]:
    codec = flavour.split("+", maxsplit=1)[0]
    keys = CounterKeys() if "aes" in flavour else None
    return {"compression": codec, "keys": keys}


def _open(fs: MemoryFileSystem, flavour: str, **kw: object) -> segwal.Wal:
    config = WalConfig(filesystem=fs, segment_bytes=2048, sync="never", **_options(flavour), **kw)  # type: ignore[arg-type]
    return segwal.Wal(LOG, config)


@functools.cache
def reference(flavour: str) -> tuple[Files, tuple[bytes, ...]]:
    """A log of three or four segments: JSON-like batches and single appends, one sync
    in the middle, left open (as a killed writer leaves it)."""
    fs = MemoryFileSystem()
    wal = _open(fs, flavour)
    payloads = []
    for i in range(30):
        batch = [b'{"i": %d, "j": %d, "text": "%s"}' % (i, j, b"ab" * (j * 3)) for j in range(8)]
        wal.append_batch(batch)
        payloads += batch
        wal.append(b"single %d" % i)
        payloads.append(b"single %d" % i)
        if i == 20:
            wal.sync()
    wal.sync()
    del wal  # killed, not closed: no clean-close mark, as a crash leaves the log
    tree = fs.tree(LOG)
    files = {
        p.rsplit("/", 1)[1]: c for p, c in tree.items() if c is not None and p.endswith(".wal")
    }
    return files, tuple(payloads)


def _outcome(files: Files, flavour: str) -> None:
    """Open, replay and verify; assert the promise (records are the reference's)."""
    _ref_files, payloads = reference(flavour)
    fs = make_fs(files, LOG)
    segwal.verify(LOG, filesystem=fs)  # never raises on a readable directory
    try:
        wal = _open(fs, flavour)
    except segwal.SegwalError:
        return
    try:
        for record in wal.replay(unsynced=True):
            assert record.payload == payloads[record.lsn - 1], f"LSN {record.lsn} differs"
    except segwal.CorruptionError as exc:
        assert exc.path is not None and exc.offset is not None
    finally:
        wal.close()


def _segments(files: Files) -> list[str]:
    return sorted(n for n in files if n.endswith(".wal"))


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_reference_logs_read_back(flavour: str) -> None:
    files, _payloads = reference(flavour)
    assert len(_segments(files)) >= 3
    head = decode_header(files[_segments(files)[-1]][:128])
    assert head.version == 2
    _outcome(files, flavour)


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("which", ["first", "last"])
def test_every_single_bit_flip(flavour: str, which: str) -> None:
    files, _ = reference(flavour)
    name = _segments(files)[0 if which == "first" else -1]
    data = files[name]
    for pos in range(0, len(data), 3):
        flipped = bytearray(data)
        flipped[pos] ^= 1 << (pos % 8)
        _outcome({**files, name: bytes(flipped)}, flavour)


def _frames(data: bytes) -> list[tuple[int, int]]:
    out, pos = [], 128
    while pos + 40 <= len(data) and data[pos + 4] == 0x52:
        head = FRAME_HEAD.unpack_from(data, pos)
        length = 40 + head[5] if head[2] & 0x06 else 40 + 4 * head[4] + head[5]
        out.append((pos, length))
        pos += length
    return out


@settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
@given(
    flavour=st.sampled_from(FLAVOURS),
    segment=st.integers(0, 3),
    frame=st.integers(0, 1000),
    at=st.integers(4, 1 << 16),
    value=st.binary(min_size=1, max_size=8),
)
def test_frames_rewritten_with_a_valid_crc(
    flavour: str, segment: int, frame: int, at: int, value: bytes
) -> None:
    files, _payloads = reference(flavour)
    names = _segments(files)
    name = names[segment % len(names)]
    data = bytearray(files[name])
    frames = _frames(bytes(data))
    pos, length = frames[frame % len(frames)]
    at = 4 + at % (length - 4)
    value = value[: length - at]
    data[pos + at : pos + at + len(value)] = value
    seed = decode_header(bytes(data[:128])).seed
    struct.pack_into("<I", data, pos, crc32c(bytes(data[pos + 4 : pos + length]), seed))
    changed = {**files, name: bytes(data)}
    if "aes" not in flavour:
        # Without authentication a forged CRC can make other records; the promise left
        # is a typed error or records, never a crash or an unbounded allocation.
        fs = make_fs(changed, LOG)
        try:
            with _open(fs, flavour) as wal:
                for _record in wal.replay(unsynced=True):
                    pass
        except segwal.SegwalError:
            pass
        return
    assert data[pos + 5] & FRAME_ENCRYPTED or bytes(data) == files[name] or at <= 5
    _outcome(changed, flavour)
