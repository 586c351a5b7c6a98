"""Shared helpers for the recovery, bad-input and kill tests: reference logs on real files,
a frame walker that reads segments without going through the log, byte surgery, and the
consistent-prefix check every crash test ends with.

Payloads are a pure function of their LSN, so a checker needs no record of what was written:
``payload_for(lsn)`` is the only correct content for ``lsn``, whichever process wrote it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import blake3

import segwal
from conftest import forget_clean_close
from segwal.format.framing import encode_record, max_frame_bytes
from segwal.format.layout import (
    FLAG_COMMIT,
    FRAME_HEAD,
    HEADER,
    HEADER_SIZE,
    KIND_RECORDS,
    SEAL_SIZE,
    ZERO_DIGEST,
    crc32c,
    decode_header,
    encode_header,
    encode_seal,
)
from segwal.format.scanner import Status, check
from segwal.storage.fileio import Buffer, FileHandle, OsFileSystem

T0 = 1_700_000_000_000_000
SMALL_SEGMENT = 1024


def payload_for(lsn: int, salt: int = 0) -> bytes:
    """The deterministic payload of ``lsn``: 1..96 bytes that differ from every other LSN's."""
    digest = hashlib.blake2b(f"{salt}:{lsn}".encode(), digest_size=32).digest()
    size = 1 + (digest[0] * 7 + lsn) % 96
    stem = f"<{lsn}>".encode()
    return (stem + digest * 4)[:size]


def fixed_clock(start: int = T0) -> Callable[[], int]:
    """A clock for ``segwal.open`` that ticks one microsecond per call."""
    state = [start]

    def clock() -> int:
        state[0] += 1
        return state[0]

    return clock


def segment_files(directory: str | Path) -> list[Path]:
    """The segment files of a log directory, in LSN order."""
    return sorted(p for p in Path(directory).iterdir() if p.name.endswith(".wal"))


def quarantine_files(directory: str | Path) -> list[Path]:
    return sorted(p for p in Path(directory).iterdir() if p.name.endswith(".quarantine"))


def snapshot(directory: str | Path) -> dict[str, bytes]:
    """Name -> bytes of every regular file except the lock (its pid changes on each open)."""
    return {
        p.name: p.read_bytes()
        for p in sorted(Path(directory).iterdir())
        if p.is_file() and p.name != "LOCK"
    }


def restore_log(directory: str | Path, snap: dict[str, bytes]) -> Path:
    """Make ``directory`` hold exactly the files of ``snap`` (plus the lock), rewriting only
    what differs: much cheaper than a fresh copy when a test damages one file at a time."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for entry in directory.iterdir():
        if entry.name == "LOCK" or entry.name in snap:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    for name, data in snap.items():
        path = directory / name
        if not path.exists() or path.stat().st_size != len(data) or path.read_bytes() != data:
            path.write_bytes(data)
    return directory


def copy_log(src: str | Path, dst: str | Path) -> Path:
    shutil.copytree(src, dst)
    return Path(dst)


def build_log(
    directory: str | Path,
    *,
    records: int = 66,
    segment_bytes: int = SMALL_SEGMENT,
    sync: str = "always",
    batch_every: int = 5,
    salt: int = 0,
    clean_close: bool = False,
) -> dict[int, bytes]:
    """A reference log: single appends with a batch of 3 every ``batch_every``-th step.

    With the defaults (1 KiB segments, 66 records) this gives seven sealed segments and an
    active one holding five frames, the second of them a batch. Returns LSN -> payload.
    Unless ``clean_close``, the log is left as a killed writer leaves it (no clean-close
    mark in META): the tests damage its tail to stand for what a crash can do.
    """
    expected: dict[int, bytes] = {}
    with segwal.open(
        directory,
        segment_bytes=segment_bytes,
        sync=sync,  # type: ignore[arg-type]
        clock=fixed_clock(),
    ) as wal:
        step = 0
        while wal.last_lsn < records:
            step += 1
            nxt = wal.last_lsn + 1
            if batch_every and step % batch_every == 0 and nxt + 2 <= records:
                got = wal.append_batch([payload_for(nxt + i, salt) for i in range(3)])
                assert list(got) == [nxt, nxt + 1, nxt + 2]
            else:
                assert wal.append(payload_for(nxt, salt)) == nxt
        for lsn in range(1, wal.last_lsn + 1):
            expected[lsn] = payload_for(lsn, salt)
    if not clean_close:
        forget_clean_close(directory)
    return expected


@dataclass(frozen=True)
class FrameInfo:
    """One records frame as it lies in a segment file."""

    offset: int
    length: int
    first_lsn: int
    count: int
    commit: bool
    durable_lsn: int

    @property
    def end(self) -> int:
        return self.offset + self.length

    @property
    def last_lsn(self) -> int:
        return self.first_lsn + self.count - 1


def read_frames(path: str | Path) -> tuple[list[FrameInfo], int]:
    """The valid frames of a segment from its header on, and the offset where they stop
    (the seal's offset in a sealed segment)."""
    data = Path(path).read_bytes()
    header = decode_header(data)
    max_frame = max_frame_bytes(header.max_record_bytes, header.flags)
    pos = HEADER_SIZE
    frames = []
    while True:
        verdict = check(data, pos, len(data), header.seed, max_frame)
        if verdict.status is not Status.FRAME:
            break
        f = verdict.frame
        assert f is not None
        frames.append(FrameInfo(pos, f.length, f.first_lsn, f.count, f.commit, f.durable_lsn))
        pos += f.length
    return frames, pos


def frame_bytes(
    seed: int,
    first_lsn: int,
    payloads: list[bytes],
    *,
    durable_lsn: int,
    commit: bool = True,
    timestamp_us: int = T0,
    record_type: int = 0,
) -> bytes:
    """One records frame, encoded here from the documented layout (not by segwal's encoder)."""
    body = b"".join(payloads)
    head = FRAME_HEAD.pack(
        0,
        KIND_RECORDS,
        FLAG_COMMIT if commit else 0,
        record_type,
        len(payloads),
        len(body),
        first_lsn,
        timestamp_us,
        durable_lsn,
    )
    frame = head + struct.pack(f"<{len(payloads)}I", *map(len, payloads)) + body
    return struct.pack("<I", crc32c(frame[4:], seed)) + frame[4:]


def header_seed(path: str | Path) -> int:
    return decode_header(Path(path).read_bytes()[:HEADER_SIZE]).seed


def xor_byte(path: str | Path, offset: int, mask: int = 0xFF) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(1)
        assert len(old) == 1, f"offset {offset} is past the end of {path}"
        f.seek(offset)
        f.write(bytes([old[0] ^ mask]))


def write_at(path: str | Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def append_bytes(path: str | Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def patch_header(path: str | Path, **fields: int | bytes) -> None:
    """Rewrite named header fields of a segment and fix the header CRC, so only the
    changed fields are wrong (the frames keep their old seed and so stop validating
    when the CRC changes: use this for header checks that come before any frame)."""
    names = [
        *("magic", "version", "flags", "checksum_id", "compression_id", "encryption_id"),
        *("reserved", "log_id", "sequence", "first_lsn", "created_us", "max_record_bytes"),
        *("header_size", "prev_digest", "reserved2", "crc"),
    ]
    raw = Path(path).read_bytes()
    values = dict(zip(names, HEADER.unpack_from(raw, 0), strict=True))
    values.update(fields)
    body = HEADER.pack(*(values[n] for n in names))
    body = body[:-4] + struct.pack("<I", crc32c(body[:-4]))
    write_at(path, 0, body)


def records_of(wal: segwal.Wal) -> dict[int, bytes]:
    return {r.lsn: r.payload for r in wal.replay(unsynced=True)}


def assert_prefix(wal: segwal.Wal, expected: dict[int, bytes], *, through: int) -> None:
    """The log holds exactly LSNs first..through of ``expected``, byte for byte."""
    got = records_of(wal)
    assert wal.last_lsn == through, (wal.last_lsn, through)
    assert sorted(got) == list(range(wal.first_lsn, through + 1))
    for lsn, payload in got.items():
        assert payload == expected[lsn], f"payload of LSN {lsn} differs"


def check_consistent_prefix(wal: segwal.Wal, salt: int = 0) -> int:
    """Records are LSNs first..last with no gap, each equal to ``payload_for``; returns count."""
    expected_lsn = wal.first_lsn
    for record in wal.replay(unsynced=True):
        assert record.lsn == expected_lsn, (record.lsn, expected_lsn)
        assert record.payload == payload_for(record.lsn, salt), f"LSN {record.lsn} differs"
        expected_lsn += 1
    assert expected_lsn == wal.last_lsn + 1, (expected_lsn, wal.last_lsn)
    return expected_lsn - wal.first_lsn


def craft_log(
    directory: str | Path,
    *,
    segments: int,
    records_per_segment: int = 1,
    log_id: bytes = b"\x42" * 16,
    max_record_bytes: int = 1 << 20,
    seal_last: bool = False,
) -> int:
    """Write a log directly with the format's encoders, without fsyncs: fast for many
    segments. Every segment but the last is sealed. Returns the last LSN."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    prev = ZERO_DIGEST
    lsn = 1
    ts = T0
    for seq in range(segments):
        first = lsn
        raw = encode_header(
            log_id=log_id,
            sequence=seq,
            first_lsn=first,
            created_us=ts,
            max_record_bytes=max_record_bytes,
            prev_digest=prev,
        )
        seed = decode_header(raw).seed
        parts = [raw]
        min_ts = 0
        durable = first - 1
        for _ in range(records_per_segment):
            ts += 1
            min_ts = min_ts or ts
            parts.append(bytes(encode_record(seed, lsn, 0, ts, durable, payload_for(lsn))))
            durable = lsn
            lsn += 1
        body = b"".join(parts)
        if seq < segments - 1 or seal_last:
            digest = blake3.blake3(body).digest()
            body += encode_seal(
                seed=seed,
                first_lsn=first,
                last_lsn=lsn - 1,
                count=lsn - first,
                min_ts=min_ts if lsn > first else 0,
                max_ts=ts if lsn > first else 0,
                data_end=len(body),
                sealed_us=ts,
                digest=digest,
            )
            prev = digest
        (directory / f"{first:020d}.wal").write_bytes(body)
    return lsn - 1


class CountingHandle:
    """A file handle that counts the bytes read through it."""

    def __init__(self, inner: FileHandle, counter: dict[str, int]) -> None:
        self._inner = inner
        self._counter = counter

    @property
    def path(self) -> str:
        return self._inner.path

    def pread(self, size: int, offset: int) -> bytes:
        data = self._inner.pread(size, offset)
        self._counter["read_bytes"] += len(data)
        self._counter["reads"] += 1
        self._counter["largest_read"] = max(self._counter["largest_read"], size)
        return data

    def pwrite(self, data: Buffer, offset: int) -> None:
        self._inner.pwrite(data, offset)

    def size(self) -> int:
        return self._inner.size()

    def truncate(self, size: int) -> None:
        self._inner.truncate(size)

    def sync(self, site: str) -> None:
        self._inner.sync(site)

    def close(self) -> None:
        self._inner.close()


class CountingFileSystem(OsFileSystem):
    """The real file system, counting what segwal reads: proves reads stay bounded."""

    def __init__(self) -> None:
        self.counter = {"read_bytes": 0, "reads": 0, "largest_read": 0}

    def open_read(self, path: str) -> CountingHandle:  # type: ignore[override]
        return CountingHandle(super().open_read(path), self.counter)

    def open_write(self, path: str) -> CountingHandle:  # type: ignore[override]
        return CountingHandle(super().open_write(path), self.counter)


def sparse_supported(directory: str | Path, size: int) -> bool:
    """Whether ``directory`` holds a sparse file of ``size`` bytes without using the space."""
    probe = Path(directory) / "sparse-probe"
    try:
        with open(probe, "wb") as f:
            f.truncate(size)
        return os.stat(probe).st_blocks * 512 < (1 << 20)
    except OSError:
        return False
    finally:
        probe.unlink(missing_ok=True)


__all__ = [
    "HEADER_SIZE",
    "SEAL_SIZE",
    "SMALL_SEGMENT",
    "T0",
    "CountingFileSystem",
    "FrameInfo",
    "append_bytes",
    "assert_prefix",
    "build_log",
    "check_consistent_prefix",
    "copy_log",
    "craft_log",
    "fixed_clock",
    "frame_bytes",
    "header_seed",
    "patch_header",
    "payload_for",
    "quarantine_files",
    "read_frames",
    "records_of",
    "restore_log",
    "segment_files",
    "snapshot",
    "sparse_supported",
    "write_at",
    "xor_byte",
]
