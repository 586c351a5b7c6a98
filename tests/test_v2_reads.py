"""The read path of encrypted logs (format v2): what its speed-ups must not change.

- Replay decrypts every encrypted frame of a segment into one buffer it reuses
  (``FrameOpener``); records are copied out of it before the next frame is opened, so
  records kept by the caller never change under it, whether frames grow or shrink, with
  compression or without, even when every frame's iterator is taken before any is read,
  on the compiled and the pure-Python decoder (which streams plain frames lazily: a body
  in the reused buffer must be decoded at once).
- A point read keeps its frame (the frame cache): its body is never that buffer.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

import segwal
from cipherkeys import CounterKeys
from segwal.format.layout import HEADER_SIZE
from segwal.log.config import WalConfig
from segwal.storage.coding import Coding
from segwal.storage.fileio import OsFileSystem
from segwal.storage.segment import iter_records, read_header
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
