"""The structure-aware fuzz target shared by hypothesis (tests/test_fuzz.py), atheris
(fuzz/atheris_fuzz.py) and the corruption matrix (tests/test_corruption_matrix.py).

``fuzz_one(data)`` reads ``data`` as a small program: which reference log to start from, which
checks to run, then up to ``MAX_OPS`` mutations (bit flips, fields overwritten with boundary
values with or without their checksum fixed, splices, truncations, garbage, deleted, renamed,
duplicated or swapped files, segment names from nowhere, crafted frames, seals, segments,
META and sparse-index files with valid checksums, raw garbage segments). It builds the
directory on a :class:`~segwal.testing.MemoryFileSystem` and runs ``segwal.verify``,
``segwal.open`` in the recovery modes the program asks for, ``replay``, ``read`` of a few
LSNs, an append, ``close`` and a second open. Any exception that is not a
:class:`segwal.SegwalError` is a finding; so is a broken invariant (``AssertionError``):

* ``verify`` never raises on a readable directory;
* an open log replays LSNs ``first..last`` with no gap (a ``CorruptionError`` while iterating
  is allowed: open does not scan sealed segments), and ``read`` agrees with ``replay``;
* after a writable open, an append gets LSN ``last + 1`` and a second open agrees with the
  first;
* a readonly open changes nothing, and raises exactly when a tolerate_tail open raises;
* ``verify`` says ok exactly when a tolerate_tail open finds no corruption (without a META).

Reference logs are written by segwal itself on a MemoryFileSystem (1 KiB segments), then
re-keyed to a fixed log id so their bytes are the same on every run, and given a hand-made
tail batch of several frames (the writer splits a batch only past 1 MiB; readers must not
depend on where frames split). They are built once per process.

``fuzz_v2_one(data)`` runs the same programs on format v2 logs (``v2_reference``: zstd
frames, and zstd frames encrypted with the tests' key ring), opened with the key ring.
"""

from __future__ import annotations

import functools
import hashlib
import json
import posixpath
import re
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

import blake3

import segwal
from segwal.format.layout import (
    FLAG_COMMIT,
    FRAME_HEAD,
    FRAME_HEAD_SIZE,
    HEADER,
    HEADER_SIZE,
    KIND_RECORDS,
    KIND_SEAL,
    SEAL,
    SEAL_SIZE,
    ZERO_DIGEST,
    crc32c,
)
from segwal.log.config import WalConfig
from segwal.testing import MemoryFileSystem

LOG: Final = "/log"
SEGMENT_BYTES: Final = 1024
T0: Final = 1_700_000_000_000_000
MAX_OPS: Final = 8
ARG_BYTES: Final = 12
SEGMENT_RE: Final = re.compile(r"^\d{20}\.wal$")
U64: Final = (1 << 64) - 1
U32: Final = (1 << 32) - 1
FLAVOURS: Final = ("always", "never", "empty_active", "sealed_tail")
OPAQUE_FLAGS: Final = 0x06  # frame flags COMPRESSED | ENCRYPTED (format v2)

# -- encoders, from docs/FORMAT.md ----------------------------------------------------------


def seg_name(lsn: int) -> str:
    return f"{lsn:020d}.wal"


def header_seed(data: bytes) -> int:
    return int.from_bytes(data[124:128], "little")


def encode_header(
    *,
    log_id: bytes,
    sequence: int,
    first_lsn: int,
    created_us: int = T0,
    max_record_bytes: int = 16 << 20,
    prev_digest: bytes = ZERO_DIGEST,
    version: int = 1,
    flags: int = 0,
    ids: tuple[int, int, int] = (1, 0, 0),
    header_size: int = HEADER_SIZE,
) -> bytes:
    body = HEADER.pack(
        b"\x89SEGWAL\n",
        version,
        flags,
        *ids,
        0,
        log_id,
        sequence,
        first_lsn,
        created_us,
        max_record_bytes,
        header_size,
        prev_digest,
        bytes(28),
        0,
    )
    return fix_header_crc(body)


def fix_header_crc(header: bytes) -> bytes:
    return header[:124] + struct.pack("<I", crc32c(header[:124]))


def encode_frame(
    seed: int,
    first_lsn: int,
    payloads: list[bytes],
    *,
    durable_lsn: int,
    commit: bool = True,
    timestamp_us: int = T0,
    record_type: int = 0,
    flags: int | None = None,
    count: int | None = None,
    body_len: int | None = None,
) -> bytes:
    body = b"".join(payloads)
    head = FRAME_HEAD.pack(
        0,
        KIND_RECORDS,
        (FLAG_COMMIT if commit else 0) if flags is None else flags,
        record_type,
        len(payloads) if count is None else count,
        len(body) if body_len is None else body_len,
        first_lsn,
        timestamp_us,
        durable_lsn,
    )
    frame = head + struct.pack(f"<{len(payloads)}I", *map(len, payloads)) + body
    return struct.pack("<I", crc32c(frame[4:], seed)) + frame[4:]


def encode_seal(
    seed: int,
    *,
    first_lsn: int,
    last_lsn: int,
    data_end: int,
    digest: bytes,
    count: int | None = None,
    min_ts: int = T0,
    max_ts: int = T0,
    sealed_us: int = T0,
    size: int = SEAL_SIZE,
    flags: int = 0,
) -> bytes:
    body = SEAL.pack(
        0,
        KIND_SEAL,
        flags,
        0,
        size,
        0,
        first_lsn,
        last_lsn,
        (last_lsn + 1 - first_lsn) & U64 if count is None else count,
        min_ts,
        max_ts,
        data_end,
        sealed_us,
        digest,
        bytes(24),
    )
    return struct.pack("<I", crc32c(body[4:], seed)) + body[4:]


def frame_length(data: bytes, pos: int, *, v2: bool = False) -> int | None:
    """The length a frame head at ``pos`` claims, or None when no head fits there. In a
    version 2 segment (``v2``) a frame flagged COMPRESSED or ENCRYPTED is opaque: its body
    bytes count everything after the head."""
    if pos + FRAME_HEAD_SIZE > len(data):
        return None
    count, body = struct.unpack_from("<II", data, pos + 8)
    if v2 and data[pos + 5] & OPAQUE_FLAGS:
        return int(FRAME_HEAD_SIZE + body)
    return int(FRAME_HEAD_SIZE + 4 * count + body)


def walk(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, end, kind byte) of each frame or seal from 128 on, as far as lengths parse."""
    out = []
    v2 = len(data) > 8 and data[8] == 2  # the header's version
    pos = HEADER_SIZE
    while pos + 5 <= len(data):
        kind = data[pos + 4]
        if kind == KIND_SEAL:
            out.append((pos, pos + SEAL_SIZE, kind))
            pos += SEAL_SIZE
            continue
        length = frame_length(data, pos, v2=v2)
        if kind != KIND_RECORDS or length is None or pos + length > len(data):
            break
        out.append((pos, pos + length, kind))
        pos += length
    return out


def rekey(data: bytes, seed: int) -> bytes:
    """Re-checksum every frame and seal of a segment with ``seed`` (and the seal's digest)."""
    out = bytearray(data)
    for start, end, kind in walk(data):
        if kind == KIND_SEAL:
            if end <= len(out):
                out[start + 72 : start + 104] = blake3.blake3(bytes(out[:start])).digest()
                out[start : start + 4] = struct.pack(
                    "<I", crc32c(bytes(out[start + 4 : end]), seed)
                )
        else:
            out[start : start + 4] = struct.pack("<I", crc32c(bytes(out[start + 4 : end]), seed))
    return bytes(out)


def rekey_log(segments: list[tuple[str, bytes]], log_id: bytes) -> list[tuple[str, bytes]]:
    """The same log under another log id: every header, checksum, digest and chain redone."""
    out = []
    prev = None
    for name, data in segments:
        fields = list(HEADER.unpack_from(data))
        fields[7] = log_id
        if prev is not None:
            fields[13] = prev
        header = fix_header_crc(HEADER.pack(*fields))
        new = rekey(header + data[HEADER_SIZE:], header_seed(header))
        units = walk(new)
        prev = None
        if units and units[-1][2] == KIND_SEAL:
            prev = new[units[-1][0] + 72 : units[-1][0] + 104]
        out.append((name, new))
    return out


def segment_digest(data: bytes) -> bytes | None:
    units = walk(data)
    if units and units[-1][2] == KIND_SEAL and units[-1][1] == len(data):
        return blake3.blake3(data[: units[-1][0]]).digest()
    return None


# -- reference logs ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Unit:
    """One frame or the seal of a reference segment."""

    offset: int
    end: int
    is_seal: bool
    first_lsn: int = 0
    count: int = 0
    commit: bool = False
    durable: int = 0
    batch_start: int = 0  # offset of the first frame of this frame's batch
    batch_lsn: int = 0  # LSN of the batch's first record


@dataclass(frozen=True, slots=True)
class RefSegment:
    log: str
    index: int
    name: str
    data: bytes
    first_lsn: int
    last_lsn: int  # last committed LSN
    log_id: bytes
    sequence: int
    prev_digest: bytes
    units: tuple[Unit, ...]
    seal: Unit | None
    digest: bytes | None  # the seal's digest

    @property
    def frames(self) -> tuple[Unit, ...]:
        return tuple(u for u in self.units if not u.is_seal)

    @property
    def data_end(self) -> int:
        return self.seal.offset if self.seal is not None else len(self.data)


@dataclass(frozen=True, slots=True)
class RefLog:
    key: str
    sync: str
    segments: tuple[RefSegment, ...]
    records: dict[int, tuple[int, int, int, bytes]]  # lsn -> (lsn, type, ts, payload)
    window_lsn: int  # first LSN of the ambiguity window (last_lsn + 1 when it is empty)

    @property
    def files(self) -> dict[str, bytes]:
        return {s.name: s.data for s in self.segments}

    @property
    def first_lsn(self) -> int:
        return self.segments[0].first_lsn

    @property
    def last_lsn(self) -> int:
        return self.segments[-1].last_lsn


def parse_segment(log: str, index: int, name: str, data: bytes) -> RefSegment:
    fields = HEADER.unpack_from(data)
    first = fields[9]
    units: list[Unit] = []
    seal = None
    digest = None
    batch_start, batch_lsn, new_batch = HEADER_SIZE, first, True
    last = first - 1
    for start, end, kind in walk(data):
        if kind == KIND_SEAL:
            seal = Unit(start, end, True, batch_start=start, batch_lsn=last + 1)
            digest = data[start + 72 : start + 104]
            units.append(seal)
            break
        _, _, flags, _, count, _, lsn, _, durable = FRAME_HEAD.unpack_from(data, start)
        if new_batch:
            batch_start, batch_lsn = start, lsn
        commit = bool(flags & FLAG_COMMIT)
        units.append(Unit(start, end, False, lsn, count, commit, durable, batch_start, batch_lsn))
        new_batch = commit
        if commit:
            last = lsn + count - 1
    end = units[-1].end if units else HEADER_SIZE
    assert end == len(data), f"{name}: {len(data) - end} unparsed bytes"
    return RefSegment(
        log, index, name, data, first, last, fields[7], fields[8], fields[13], tuple(units), seal,
        digest,
    )  # fmt: skip


def records_of_segment(seg: RefSegment) -> list[tuple[int, int, int, bytes]]:
    out = []
    data = seg.data
    for unit in seg.frames:
        _, _, _, rtype, count, _, lsn, ts, _ = FRAME_HEAD.unpack_from(data, unit.offset)
        lengths = struct.unpack_from(f"<{count}I", data, unit.offset + FRAME_HEAD_SIZE)
        pos = unit.offset + FRAME_HEAD_SIZE + 4 * count
        for i, n in enumerate(lengths):
            out.append((lsn + i, rtype, ts, data[pos : pos + n]))
            pos += n
    return out


def ref_payload(lsn: int, salt: int = 0) -> bytes:
    size = 0 if lsn % 11 == 0 else (lsn * 37 + salt) % 61
    seed = hashlib.blake2b(f"{salt}/{lsn}".encode(), digest_size=32).digest()
    return (f"<{lsn}>".encode() + seed * 2)[:size]


class Clock:
    """Microseconds that tick by one on every call, from ``start``."""

    def __init__(self, start: int = T0) -> None:
        self.now = start

    def __call__(self) -> int:
        self.now += 1
        return self.now


def _write_reference(
    key: str, payload: Callable[[int], bytes] = ref_payload, tail: int = 7, **coding: object
) -> tuple[list[tuple[str, bytes]], int]:
    """Write a log with segwal itself; returns its segments and the LSN last made durable.
    ``tail``: steps into the active segment; ``coding``: WalConfig's compression and keys,
    for a format v2 log."""
    fs = MemoryFileSystem()
    sync: Literal["always", "never"] = "never" if key.endswith("never") else "always"
    sealed = 2 if key in ("empty_active", "sealed_tail") else 3
    synced = 0
    config = WalConfig(
        segment_bytes=SEGMENT_BYTES,
        sync=sync,
        filesystem=fs,
        clock=Clock(),
        **coding,  # type: ignore[arg-type]
    )
    with segwal.Wal(LOG, config) as wal:
        step = 0

        def one_step() -> None:
            nonlocal step
            step += 1
            nxt = wal.last_lsn + 1
            if step % 4 == 3:
                got = wal.append_batch([payload(nxt + i) for i in range(2 + step % 3)], step)
                assert got.start == nxt
            else:
                assert wal.append(payload(nxt), type=step % 3) == nxt

        while len(wal.segments()) <= sealed:
            one_step()
        for i in range(tail):
            if sync == "never" and i == min(3, tail - 2):
                synced = wal.sync()
            one_step()
        assert len(wal.segments()) == sealed + 1, "the active segment rotated: shrink the script"
        if key in ("empty_active", "sealed_tail"):
            wal.rotate()
        durable = synced if key == "never" else wal.last_lsn
    tree = fs.tree(LOG)
    segments = sorted(
        (posixpath.basename(p), c)
        for p, c in tree.items()
        if c is not None and SEGMENT_RE.match(posixpath.basename(p))
    )
    if key == "sealed_tail":
        segments = segments[:-1]
    return segments, durable


def _append_batch(
    segments: list[tuple[str, bytes]], durable: int, *, frames: int
) -> list[tuple[str, bytes]]:
    """Add a batch of ``frames`` frames (COMMIT on the last) to the last segment."""
    name, data = segments[-1]
    ref = parse_segment("", 0, name, data)
    seed = header_seed(data)
    lsn = ref.last_lsn + 1
    ts = FRAME_HEAD.unpack_from(data, ref.frames[-1].offset)[7] if ref.frames else T0
    parts = []
    for i in range(frames):
        payloads = [ref_payload(lsn + j) for j in range(1 + i % 2)]
        parts.append(
            encode_frame(
                seed, lsn, payloads, durable_lsn=durable, commit=i == frames - 1, timestamp_us=ts,
                record_type=7,
            )
        )  # fmt: skip
        lsn += len(payloads)
    return [*segments[:-1], (name, data + b"".join(parts))]


def _log_id(key: str) -> bytes:
    return hashlib.blake2b(key.encode(), digest_size=16).digest()


@functools.cache
def reference_logs() -> dict[str, RefLog]:
    """The reference logs by flavour, plus "other": "always" under another log id."""
    out: dict[str, RefLog] = {}
    raw: dict[str, list[tuple[str, bytes]]] = {}
    for key in FLAVOURS:
        segments, durable = _write_reference(key)
        segments = rekey_log(segments, _log_id(key))
        if key == "always":
            # A 3-frame batch that the last (durable) frame proves was synced, then that frame.
            segments = _append_batch(segments, durable, frames=3)
            last = parse_segment("", 0, *segments[-1]).last_lsn
            segments = _append_batch(segments, last, frames=1)
        elif key == "never":
            # An unsynced 3-frame batch at the very end, inside the ambiguity window.
            segments = _append_batch(segments, durable, frames=3)
        raw[key] = segments
    raw["other"] = rekey_log(raw["always"], _log_id("other"))
    for key, segments in raw.items():
        segs = tuple(parse_segment(key, i, n, d) for i, (n, d) in enumerate(segments))
        records: dict[int, tuple[int, int, int, bytes]] = {}
        for seg in segs:
            for rec in records_of_segment(seg):
                if rec[0] <= seg.last_lsn:
                    records[rec[0]] = rec
        sync = "never" if key == "never" else "always"
        out[key] = RefLog(key, sync, segs, records, _window(segs))
        for lsn, rec in records.items():
            assert rec[3] == ref_payload(lsn), f"{key}: payload of LSN {lsn}"
    return out


def _window(segments: tuple[RefSegment, ...]) -> int:
    """First LSN whose batch a crash could tear (no later frame recorded it durable)."""
    tail = segments[-1]
    frames = tail.frames
    window = tail.last_lsn + 1
    for i, unit in enumerate(frames):
        if unit.offset != unit.batch_start:
            continue
        later = [f.durable for f in frames[i:] if f.batch_start != unit.batch_start]
        if all(d < unit.batch_lsn for d in later):
            window = min(window, unit.batch_lsn)
    return window


# Format v2 reference logs for the corruption matrix: like "always" and "never", written
# with zstd (and zstd + AES-256-GCM under the tests' key ring, ``cipherkeys.CounterKeys``).
# They keep segwal's random log id, salts and nonces (re-keying would break the
# authentication), so their bytes differ between processes; the matrix builds them once,
# before its workers fork.
V2_REF_FLAVOURS: Final = ("zstd.always", "zstd+aes.never")


def v2_payload(lsn: int) -> bytes:
    """JSON-like, so that batches and the larger single records compress."""
    size = 0 if lsn % 11 == 0 else (lsn * 37) % 167
    text = b'{"lsn": %d, "event": "append", "text": "%s"}' % (lsn, b"alpha beta " * 20)
    return text[:size]


def keys_for(flavour: str) -> object | None:
    """The key ring a v2 reference log is read with (None: not encrypted)."""
    if "aes" not in flavour:
        return None
    from cipherkeys import CounterKeys

    return CounterKeys()


@functools.cache
def v2_reference_logs() -> dict[str, RefLog]:
    out: dict[str, RefLog] = {}
    for key in V2_REF_FLAVOURS:
        keys = keys_for(key)
        segments, _ = _write_reference(key, v2_payload, 4, compression="zstd", keys=keys)
        segs = tuple(parse_segment(key, i, n, d) for i, (n, d) in enumerate(segments))
        assert any(d[8] == 2 for _, d in segments), f"{key}: no version 2 segment"
        assert any(
            d[u.offset + 5] & OPAQUE_FLAGS for s in segs for u in s.frames for d in [s.data]
        ), f"{key}: no frame was compressed"
        # The records, read back by segwal (the frames are compressed, or encrypted).
        fs = make_fs(dict(segments))
        config = WalConfig(segment_bytes=SEGMENT_BYTES, readonly=True, filesystem=fs, keys=keys)  # type: ignore[arg-type]
        with segwal.Wal(LOG, config) as wal:
            read = {
                r.lsn: (r.lsn, r.type, r.timestamp_us, r.payload) for r in wal.replay(unsynced=True)
            }
        records = {lsn: read[lsn] for lsn in range(1, segs[-1].last_lsn + 1)}
        for lsn, rec in records.items():
            assert rec[3] == v2_payload(lsn), f"{key}: payload of LSN {lsn}"
        out[key] = RefLog(
            key, "never" if key.endswith("never") else "always", segs, records, _window(segs)
        )
    return out


@functools.cache
def header_index() -> dict[bytes, RefSegment]:
    """Every reference segment by its header bytes (headers are unique across logs)."""
    out = {}
    for log in reference_logs().values():
        for seg in log.segments:
            assert seg.data[:HEADER_SIZE] not in out
            out[seg.data[:HEADER_SIZE]] = seg
    return out


# -- building a directory on a MemoryFileSystem ----------------------------------------------

Tree = dict[str, bytes | None]  # name -> content; None: a directory


def make_fs(files: Mapping[str, bytes | None], directory: str = LOG) -> MemoryFileSystem:
    fs = MemoryFileSystem()
    fs.make_dir(directory)
    for name, content in sorted(files.items()):
        path = posixpath.join(directory, name)
        if content is None:
            fs.make_dir(path)
            continue
        handle = fs.create(path)
        try:
            if content:
                handle.pwrite(content, 0)
        finally:
            handle.close()
    return fs


# -- the program reader -------------------------------------------------------------------


class Reader:
    """Bytes to choices; reads past the end give zeros, so every input is a program."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def left(self) -> int:
        return max(0, len(self.data) - self.pos)

    def take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out + bytes(n - len(out))

    def u8(self) -> int:
        return self.take(1)[0]

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "little")

    def below(self, n: int) -> int:
        return self.uint(2) % n if n > 0 else 0

    def pick(self, seq: list[str] | tuple[str, ...]) -> str:
        return seq[self.below(len(seq))]


def boundary_values(size: int, current: int, context: Iterable[int]) -> list[int]:
    top = (1 << (8 * size)) - 1
    vals = [0, 1, 2, top, top - 1, top >> 1, (top >> 1) + 1, current + 1, current - 1]
    vals += [current ^ (1 << b) for b in (0, 7, 8 * size - 1)]
    vals += list(context)
    return [v & top for v in vals]


Fields = tuple[tuple[int, int], ...]
HEADER_FIELDS: Final[Fields] = (
    (0, 8), (8, 2), (10, 2), (12, 1), (13, 1), (14, 1), (15, 1), (16, 16), (32, 8), (40, 8),
    (48, 8), (56, 4), (60, 4), (64, 32), (96, 28), (124, 4),
)  # fmt: skip
FRAME_FIELDS: Final[Fields] = (
    (0, 4), (4, 1), (5, 1), (6, 2), (8, 4), (12, 4), (16, 8), (24, 8), (32, 8), (40, 4),
)  # fmt: skip
SEAL_FIELDS: Final[Fields] = (
    (0, 4), (4, 1), (5, 1), (6, 2), (8, 4), (12, 4), (16, 8), (24, 8), (32, 8), (40, 8),
    (48, 8), (56, 8), (64, 8), (72, 32), (104, 24),
)  # fmt: skip
INTERESTING_LSNS: Final = (0, 1, 2, 3, 7, 20, 50, 99, 1 << 32, (1 << 63) - 1, U64 - 1, U64)


@dataclass(slots=True)
class Program:
    """A decoded fuzz input: the starting log, the mutations done, the checks to run."""

    flavour: str
    files: Tree
    modes: tuple[str, ...] = ("tolerate_tail",)
    readonly: bool = False
    append: bool = False
    reads: tuple[int, ...] = ()
    done: list[str] = field(default_factory=list)


OPCODES: Final = (
    "flip", "field", "splice", "insert", "delete_range", "truncate", "append_junk", "remove",
    "duplicate", "rename", "swap", "foreign_segment", "craft_frame", "craft_seal",
    "craft_segment", "meta", "index", "raw_segment", "other_file", "rekey",
)  # fmt: skip


def decode(data: bytes, start: tuple[str, Tree] | None = None) -> Program:
    """Turn fuzz bytes into a program (pure; every byte string is valid). ``start``: the
    flavour and files to mutate instead of the one the first byte picks."""
    r = Reader(data)
    choice = r.u8()
    flavour = (*FLAVOURS, "empty")[choice % 5]
    files: Tree = dict(reference_logs()[flavour].files) if flavour != "empty" else {}
    if start is not None:
        flavour, files = start[0], dict(start[1])
    opts = r.u8()
    modes = ["tolerate_tail"]
    if opts & 1:
        modes.append("strict")
    if opts & 2:
        modes.append("truncate")
    prog = Program(flavour, files, tuple(modes), bool(opts & 4), bool(opts & 8))
    if opts & 16:
        prog.reads = tuple(r.uint(2) for _ in range(3))
    for _ in range(MAX_OPS):
        if r.left <= 0:
            break
        op = OPCODES[r.u8() % len(OPCODES)]
        args = Reader(r.take(ARG_BYTES))
        blob = r.take(r.u8()) if r.left else b""
        _mutate(prog, op, args, blob)
    return prog


def encode_op(op: str, args: bytes = b"", blob: bytes = b"") -> bytes:
    """The bytes of one mutation, for structured strategies and seeds."""
    assert len(blob) < 256
    return bytes([OPCODES.index(op)]) + args[:ARG_BYTES].ljust(ARG_BYTES, b"\0") + bytes(
        [len(blob)]
    ) + blob  # fmt: skip


def _names(files: Tree, *, segments_first: bool = True) -> list[str]:
    names = sorted(files)
    if segments_first:
        names = [n for n in names if SEGMENT_RE.match(n)] + [
            n for n in names if not SEGMENT_RE.match(n)
        ]
    return names


def _pick_file(files: Tree, r: Reader) -> str | None:
    names = [n for n in _names(files) if files[n] is not None]
    return names[r.below(len(names))] if names else None


def _lsn_name(r: Reader, files: Tree) -> str:
    kind = r.u8() % 4
    lsns = sorted(int(n[:20]) for n in files if SEGMENT_RE.match(n)) or [1]
    if kind == 0:
        lsn = INTERESTING_LSNS[r.below(len(INTERESTING_LSNS))]
    elif kind == 1:
        lsn = lsns[r.below(len(lsns))] + (r.u8() % 5) - 2
    elif kind == 2:
        last = reference_logs()["always"].last_lsn
        lsn = last + (r.u8() % 5) - 1
    else:
        lsn = r.uint(8) % 10**20
    return seg_name(max(0, min(lsn, 10**20 - 1)))


def _units(data: bytes) -> list[tuple[int, int, int]]:
    return walk(data) if len(data) >= HEADER_SIZE else []


def _mutate(prog: Program, op: str, r: Reader, blob: bytes) -> None:
    files = prog.files
    picked = _pick_file(files, r)
    target = picked if picked is not None else ""
    data = files.get(target) if picked is not None else None
    note = f"{op}"
    if op == "flip" and data:
        pos = r.uint(4) % len(data)
        files[target] = data[:pos] + bytes([data[pos] ^ (1 << (r.u8() % 8))]) + data[pos + 1 :]
        note += f" {target}@{pos}"
    elif op == "field" and data is not None:
        note += " " + _overwrite_field(files, target, data, r)
    elif op == "splice" and data is not None:
        donor = _donor_bytes(files, r)
        start = r.uint(2) % (len(donor) + 1)
        piece = donor[start : start + 1 + r.uint(2) % 512]
        pos = r.uint(2) % (len(data) + 1)
        if r.u8() & 1:
            files[target] = data[:pos] + piece + data[pos + len(piece) :]
        else:
            files[target] = data[:pos] + piece + data[pos:]
        note += f" {target}@{pos}+{len(piece)}"
    elif op == "insert" and data is not None:
        pos = r.uint(2) % (len(data) + 1)
        files[target] = data[:pos] + blob + data[pos:]
    elif op == "delete_range" and data:
        pos = r.uint(2) % len(data)
        files[target] = data[:pos] + data[pos + 1 + r.uint(2) % 256 :]
    elif op == "truncate" and data is not None:
        units = _units(data)
        how = r.u8() % 3
        if how == 0 and units:
            start, end, _ = units[r.below(len(units))]
            cut = (start, end)[r.u8() & 1] + (r.u8() % 3) - 1
        elif how == 1:
            cut = r.uint(2) % (HEADER_SIZE + 1)
        else:
            cut = r.uint(4) % (len(data) + 1)
        files[target] = data[: max(0, cut)]
        note += f" {target}@{cut}"
    elif op == "append_junk" and data is not None:
        how = r.u8() % 4
        if how == 0:
            junk = blob
        elif how == 1:
            junk = bytes(1 + r.uint(2) % 4096)
        elif how == 2:
            units = [u for u in _units(data) if u[2] == KIND_RECORDS]
            junk = data[units[-1][0] : units[-1][1]] if units else blob
        else:
            junk = (blob or b"R") * (1 + r.u8())
        files[target] = data + junk
    elif op == "remove" and picked is not None:
        del files[target]
    elif op in ("duplicate", "rename") and picked is not None:
        name = _lsn_name(r, files) if r.u8() % 4 else target + (".tmp", ".1.quarantine")[r.u8() & 1]
        content = files[target]
        if op == "rename":
            del files[target]
        files[name] = content
        note += f" {target}->{name}"
    elif op == "swap":
        other = _pick_file(files, r)
        if picked is not None and other is not None:
            files[target], files[other] = files[other], files[target]
    elif op == "foreign_segment":
        donor_log = reference_logs()[r.pick((*FLAVOURS, "other"))]
        seg = donor_log.segments[r.below(len(donor_log.segments))]
        name = seg.name if r.u8() & 1 else _lsn_name(r, files)
        files[name] = seg.data
        note += f" {donor_log.key}/{seg.name}->{name}"
    elif op == "craft_frame" and data is not None and len(data) >= HEADER_SIZE:
        files[target] = _craft_frame(data, r, blob)
    elif op == "craft_seal" and data is not None and len(data) >= HEADER_SIZE:
        files[target] = _craft_seal(data, r)
    elif op == "craft_segment":
        name, content = _craft_segment(files, r, blob)
        files[name] = content
        note += f" {name}"
    elif op == "meta":
        files["META"] = _craft_meta(r, blob)
    elif op == "index" and SEGMENT_RE.match(target) and data is not None:
        files[target + ".idx"] = _craft_index(data, r, blob)
    elif op == "raw_segment":
        name = _lsn_name(r, files)
        size = r.uint(2) % 3000
        content = (blob or b"\0") * (size // max(1, len(blob)) + 1)
        if r.u8() & 1 and len(files):
            # A valid header of a reference segment, then garbage.
            seg = reference_logs()["always"].segments[r.below(4)]
            content = seg.data[:HEADER_SIZE] + content
        files[name] = content[: size + HEADER_SIZE]
        note += f" {name}"
    elif op == "other_file":
        name = r.pick(("LOCK", "META", "META.tmp", "notes.txt", "00000000000000000001.wal.idx"))
        if r.u8() % 5 == 0:
            name = _lsn_name(r, files)
            files[name] = None  # a directory named like a segment
        else:
            files[name] = blob
        note += f" {name}"
    elif op == "rekey" and data is not None and len(data) >= HEADER_SIZE:
        header = fix_header_crc(data[:HEADER_SIZE])
        files[target] = rekey(header + data[HEADER_SIZE:], header_seed(header))
    else:
        note += " (no-op)"
    prog.done.append(note)


def _donor_bytes(files: Tree, r: Reader) -> bytes:
    if r.u8() & 1:
        seg = reference_logs()[r.pick((*FLAVOURS, "other"))].segments[r.below(3)]
        return seg.data
    name = _pick_file(files, r)
    content = files.get(name) if name is not None else None
    return content or b""


def _overwrite_field(files: Tree, target: str, data: bytes, r: Reader) -> str:
    """Set one field of a header, frame, seal (or any 8 bytes) to a boundary value; then
    maybe fix the checksum that covers it, or re-seed the whole segment."""
    buf = bytearray(data)
    where = r.u8() % 4
    units = _units(data)
    frames = [u for u in units if u[2] == KIND_RECORDS]
    seals = [u for u in units if u[2] == KIND_SEAL]
    table: Fields
    if where == 0 or not units:
        base, table = 0, HEADER_FIELDS
    elif where in (1, 2) and frames:
        base, table = frames[r.below(len(frames))][0], FRAME_FIELDS
    elif seals:
        base, table = seals[-1][0], SEAL_FIELDS
    else:
        base, table = max(0, len(data) - SEAL_SIZE), SEAL_FIELDS
    off, size = table[r.below(len(table))]
    pos = base + off
    if pos + size > len(buf):
        return "field (outside)"
    current = int.from_bytes(buf[pos : pos + size], "little")
    context = [len(data), len(data) + 1, len(data) - SEAL_SIZE, base, HEADER_SIZE, 40, 1 << 30]
    values = boundary_values(min(size, 8), current, context)
    value = values[r.below(len(values))] if r.u8() % 4 else r.uint(min(size, 8))
    buf[pos : pos + size] = value.to_bytes(min(size, 8), "little").ljust(size, b"\0")
    fix = r.u8() % 3
    if fix and table is HEADER_FIELDS and len(buf) >= HEADER_SIZE:
        buf[:HEADER_SIZE] = fix_header_crc(bytes(buf[:HEADER_SIZE]))
        if fix == 2:
            buf = bytearray(rekey(bytes(buf), header_seed(bytes(buf))))
    elif fix and len(buf) >= HEADER_SIZE:
        seed = header_seed(bytes(buf))
        if table is SEAL_FIELDS:
            end = base + SEAL_SIZE
        else:
            length = frame_length(bytes(buf), base)
            end = base + length if length is not None else len(buf)
        if end <= len(buf):
            buf[base : base + 4] = struct.pack("<I", crc32c(bytes(buf[base + 4 : end]), seed))
    files[target] = bytes(buf)
    return f"{target}@{pos}={value:#x} fix={fix}"


def _craft_frame(data: bytes, r: Reader, blob: bytes) -> bytes:
    """A frame with a valid checksum for this segment, and fields chosen by the input."""
    seed = header_seed(data)
    units = _units(data)
    frames = [u for u in units if u[2] == KIND_RECORDS]
    first = int.from_bytes(data[40:48], "little")
    nxt = first
    for start, _, _ in frames:
        count, lsn = struct.unpack_from("<I", data, start + 8)[0], FRAME_HEAD.unpack_from(
            data, start
        )[6]  # fmt: skip
        nxt = lsn + count
    lsn = (nxt, nxt - 1, nxt + 1, first, U64, 0, nxt + (1 << 32))[r.u8() % 7]
    n = 1 + r.u8() % 3
    payloads = [blob[i::n] for i in range(n)]
    durable = (nxt - 1, 0, nxt, nxt + 5, U64, max(0, first - 1))[r.u8() % 6]
    flags = (1, 0, 3, 2, 0x81)[r.u8() % 5]
    count = None if r.u8() % 4 else (0, n + 1, U32, 1 << 16)[r.u8() % 4]
    body = None if r.u8() % 4 else (0, U32, len(blob) + 1)[r.u8() % 3]
    ts = (T0, 0, U64, T0 - 1)[r.u8() % 4]
    frame = encode_frame(
        seed, lsn & U64, payloads, durable_lsn=durable & U64, flags=flags, count=count,
        body_len=body, timestamp_us=ts, record_type=r.uint(2),
    )  # fmt: skip
    where = r.u8() % 3
    end = frames[-1][1] if frames else HEADER_SIZE
    if where == 0:  # at the end of the data (before a seal, if any, which then is lost)
        return data[:end] + frame
    if where == 1:
        return data + frame
    pos = units[r.below(len(units))][0] if units else HEADER_SIZE
    return data[:pos] + frame + data[pos:]


def _craft_seal(data: bytes, r: Reader) -> bytes:
    seed = header_seed(data)
    units = _units(data)
    frames = [u for u in units if u[2] == KIND_RECORDS]
    end = frames[-1][1] if frames else HEADER_SIZE
    body = data[:end]
    first = int.from_bytes(data[40:48], "little")
    last = first - 1
    for start, _, _ in frames:
        _, _, flags, _, count, _, lsn, _, _ = FRAME_HEAD.unpack_from(data, start)
        if flags & FLAG_COMMIT:
            last = lsn + count - 1
    digest = blake3.blake3(body).digest() if r.u8() % 4 else bytes(32)
    first_lsn = (first, first + 1, 0, U64)[r.u8() % 4] if r.u8() % 3 == 0 else first
    last_lsn = (last, last + 1, last - 1, U64, first - 2)[r.u8() % 5] if r.u8() % 3 == 0 else last
    data_end = (end, end + 1, 0, U64)[r.u8() % 4] if r.u8() % 3 == 0 else end
    count = None if r.u8() % 4 else (0, U64, 1)[r.u8() % 3]
    seal = encode_seal(
        seed, first_lsn=first_lsn & U64, last_lsn=last_lsn & U64, data_end=data_end,
        digest=digest, count=count, size=SEAL_SIZE if r.u8() % 8 else 64,
    )  # fmt: skip
    return body + seal + (b"" if r.u8() % 4 else b"tail")


def _craft_segment(files: Tree, r: Reader, blob: bytes) -> tuple[str, bytes]:
    """A whole segment with valid checksums: a next segment, a gap, an overlap, another log."""
    names = sorted(n for n in files if SEGMENT_RE.match(n) and files[n] is not None)
    prev = files[names[-1]] if names else None
    if prev is not None and len(prev) >= HEADER_SIZE:
        fields = HEADER.unpack_from(prev)
        log_id, seq, created = fields[7], fields[8] + 1, fields[10]
        digest = segment_digest(prev) or ZERO_DIGEST
        seal_units = [u for u in _units(prev) if u[2] == KIND_SEAL]
        last = (
            int.from_bytes(prev[seal_units[-1][0] + 24 : seal_units[-1][0] + 32], "little")
            if seal_units
            else fields[9] - 1
        )
    else:
        log_id, seq, created, digest, last = _log_id("crafted"), 0, T0, ZERO_DIGEST, 0
    first = (last + 1, last + 2, last, 1, U64, (1 << 63))[r.u8() % 6] & U64
    first = max(first, 0)
    if r.u8() % 5 == 0:
        log_id = bytes(r.take(16))
    seq = (seq, seq + 1, 0, U64)[r.u8() % 4] if r.u8() % 3 == 0 else seq
    digest = digest if r.u8() % 5 else bytes(32)
    limit = (16 << 20, 0, 1, U32, 1 << 30, 64)[r.u8() % 6]
    version = 1 if r.u8() % 6 else (0, 2, 0xFFFF)[r.u8() % 3]
    flags = 0 if r.u8() % 8 else 1
    ids = (1, 0, 0) if r.u8() % 8 else ((2, 0, 0), (1, 1, 0), (1, 0, 1), (0, 0, 0))[r.u8() % 4]
    size = HEADER_SIZE if r.u8() % 8 else 64
    header = encode_header(
        log_id=log_id, sequence=seq & U64, first_lsn=first, created_us=created,
        max_record_bytes=limit, prev_digest=digest, version=version, flags=flags, ids=ids,
        header_size=size,
    )  # fmt: skip
    seed = header_seed(header)
    body = header
    lsn = first
    for _ in range(r.u8() % 4):
        payloads = [blob[: 1 + r.u8() % 40]]
        body += encode_frame(seed, lsn & U64, payloads, durable_lsn=max(0, lsn - 1) & U64)
        lsn += 1
    if r.u8() & 1:
        body += encode_seal(
            seed, first_lsn=first, last_lsn=(lsn - 1) & U64, data_end=len(body),
            digest=blake3.blake3(body).digest(),
        )  # fmt: skip
    name = seg_name(min(first, 10**20 - 1)) if r.u8() % 4 else _lsn_name(r, files)
    return name, body


def _craft_meta(r: Reader, blob: bytes) -> bytes:
    """A META file with a valid checksum and chosen values (or raw bytes)."""
    how = r.u8() % 4
    if how == 0:
        return blob
    first = INTERESTING_LSNS[r.below(len(INTERESTING_LSNS))]
    after = None if r.u8() & 1 else INTERESTING_LSNS[r.below(len(INTERESTING_LSNS))]
    holds = {} if r.u8() & 1 else {"h": INTERESTING_LSNS[r.below(len(INTERESTING_LSNS))]}
    raw: object = {"first_lsn": first, "holds": holds, "truncate_after": after}
    if how == 2:
        raw = [first, "x", None, blob.decode("latin-1")][r.u8() % 4]
    elif how == 3:
        raw = {"first_lsn": -first, "holds": [], "truncate_after": "1"}
    body = json.dumps(raw).encode()
    return b"SWMETA01" + struct.pack("<II", len(body), crc32c(body)) + body


def _craft_index(data: bytes, r: Reader, blob: bytes) -> bytes:
    """A sparse-index sidecar with a valid checksum and the segment's digest."""
    digest = segment_digest(data) or bytes(32)
    if r.u8() % 5 == 0:
        digest = bytes(32)
    units = [u for u in _units(data) if u[2] == KIND_RECORDS]
    entries = []
    first = int.from_bytes(data[40:48], "little") if len(data) >= 48 else 1
    for i in range(r.u8() % 4):
        pos = units[r.below(len(units))][0] if units else HEADER_SIZE
        if i == 0 and r.u8() % 3:
            pos = HEADER_SIZE
        lsn = first + r.u8() % 8 - 1
        entries.append(((lsn & U64), (pos if r.u8() % 4 else r.uint(8)), T0))
    entries.sort(key=lambda e: e[1])
    interval = (4096, 0, 1, U32)[r.u8() % 4]
    body = b"SWIDX001" + struct.pack("<II", len(entries), interval) + digest
    body += b"".join(struct.pack("<QQQ", *e) for e in entries)
    return body + struct.pack("<I", crc32c(body))


# -- running a directory through segwal ---------------------------------------------------


@dataclass(slots=True)
class Result:
    """What happened to one directory: for cross-checks and for the corruption matrix."""

    verify: segwal.VerifyReport | None = None
    errors: dict[str, BaseException] = field(default_factory=dict)  # mode -> error at open
    records: dict[str, list[tuple[int, int, int, bytes]]] = field(default_factory=dict)
    replay_errors: dict[str, BaseException] = field(default_factory=dict)
    reports: dict[str, segwal.RecoveryReport] = field(default_factory=dict)
    first_last: dict[str, tuple[int, int]] = field(default_factory=dict)


# The key ring the checks open with: set by fuzz_v2_one and by the corruption matrix for an
# encrypted reference log.
_KEYS: list[object] = []


def open_log(fs: MemoryFileSystem, mode: str, *, readonly: bool = False) -> segwal.Wal:
    if _KEYS:
        config = WalConfig(
            segment_bytes=SEGMENT_BYTES,
            recovery=mode,  # type: ignore[arg-type]
            readonly=readonly,
            filesystem=fs,
            clock=Clock(T0 + 10**9),
            keys=_KEYS[0],  # type: ignore[arg-type]
        )
        return segwal.Wal(LOG, config)
    return segwal.open(
        LOG,
        segment_bytes=SEGMENT_BYTES,
        recovery=mode,  # type: ignore[arg-type]
        readonly=readonly,
        filesystem=fs,
        clock=Clock(T0 + 10**9),
    )


def replay_all(
    wal: segwal.Wal, limit: int = 1 << 20
) -> tuple[list[tuple[int, int, int, bytes]], BaseException | None]:
    """Every record (unsynced too), and the CorruptionError that stopped the replay, if any."""
    out: list[tuple[int, int, int, bytes]] = []
    try:
        for rec in wal.replay(unsynced=True):
            out.append(tuple(rec))  # type: ignore[arg-type]
            if len(out) >= limit:
                break
    except segwal.CorruptionError as exc:
        return out, exc
    return out, None


def _check_records(
    wal: segwal.Wal, records: list[tuple[int, int, int, bytes]], stopped: bool
) -> None:
    first, last = wal.first_lsn, wal.last_lsn
    lsns = [rec[0] for rec in records]
    assert lsns == list(range(first, first + len(lsns))), f"replay has gaps: {lsns[:20]}"
    if not stopped:
        assert first + len(lsns) - 1 == last, f"replay ends at {first + len(lsns) - 1}, not {last}"


def _check_reads(
    wal: segwal.Wal,
    records: list[tuple[int, int, int, bytes]],
    picks: Iterable[int],
    *,
    trust_index: bool = True,
) -> None:
    first, last = wal.first_lsn, wal.last_lsn
    by_lsn = {rec[0]: rec for rec in records}
    for pick in picks:
        lsn = first + pick % (last - first + 3) - 1 if last >= first else pick % 3
        try:
            got = wal.read(lsn, unsynced=True)
        except segwal.NotFoundError:
            assert not first <= lsn <= last, f"read({lsn}) not found in {first}..{last}"
            continue
        except segwal.CorruptionError:
            # Only where replay failed too, or where a crafted index (valid checksum) lies.
            assert lsn not in by_lsn or trust_index is False, f"read({lsn}) raised"
            continue
        assert first <= lsn <= last, f"read({lsn}) outside {first}..{last} returned a record"
        if lsn in by_lsn:
            assert tuple(got) == by_lsn[lsn], f"read({lsn}) disagrees with replay"


def run(
    files: Tree,
    *,
    modes: Iterable[str] = ("tolerate_tail",),
    readonly: bool = True,
    append: bool = True,
    reads: Iterable[int] = (),
    verify: bool = True,
) -> Result:
    """Run one directory through verify, open (each mode), replay, read, append, reopen.

    Only SegwalErrors are caught; anything else propagates, as do broken invariants.
    """
    result = Result()
    if verify:
        fs = make_fs(files)
        result.verify = segwal.verify(LOG, filesystem=fs)
    for mode in modes:
        _run_mode(files, mode, result, append=append, reads=reads)
    if readonly:
        _run_readonly(files, result, reads)
    _cross_check(files, result)
    return result


def _run_mode(
    files: Tree, mode: str, result: Result, *, append: bool, reads: Iterable[int]
) -> None:
    fs = make_fs(files)
    try:
        wal = open_log(fs, mode)
    except segwal.SegwalError as exc:
        result.errors[mode] = exc
        return
    try:
        result.reports[mode] = wal.recovery
        result.first_last[mode] = (wal.first_lsn, wal.last_lsn)
        records, stopped = replay_all(wal)
        result.records[mode] = records
        if stopped is not None:
            result.replay_errors[mode] = stopped
        _check_records(wal, records, stopped is not None)
        _check_reads(wal, records, reads, trust_index=not _has_index(files))
        if not append:
            return
        last = wal.last_lsn
        try:
            lsn = wal.append(b"fuzz", type=1)
        except segwal.SegwalError:
            return
        assert lsn == last + 1, f"append got LSN {lsn} after {last}"
    finally:
        wal.close()
    # A second open must agree with the first, whatever the first one cut.
    try:
        again = open_log(fs, "tolerate_tail")
    except segwal.SegwalError as exc:
        raise AssertionError(f"reopen after a {mode} open and an append raised {exc!r}") from exc
    try:
        assert again.last_lsn == lsn, f"reopen ends at {again.last_lsn}, not {lsn}"
        assert again.recovery.cuts == (), f"second open cut again: {again.recovery.cuts}"
        tail = again.read(lsn)
        assert tail.payload == b"fuzz" and tail.type == 1, "the appended record differs"
        if stopped is None:
            now, stop2 = replay_all(again)
            assert stop2 is None, f"replay after reopen raised {stop2!r}"
            assert now[:-1] == records, "records changed across a reopen"
    finally:
        again.close()


def _has_index(files: Tree) -> bool:
    return any(name.endswith(".idx") for name in files)


def _run_readonly(files: Tree, result: Result, reads: Iterable[int]) -> None:
    fs = make_fs(files)
    before = fs.fingerprint()
    try:
        wal = open_log(fs, "tolerate_tail", readonly=True)
    except segwal.SegwalError as exc:
        result.errors["readonly"] = exc
    else:
        try:
            result.first_last["readonly"] = (wal.first_lsn, wal.last_lsn)
            records, stopped = replay_all(wal)
            result.records["readonly"] = records
            if stopped is not None:
                result.replay_errors["readonly"] = stopped
            _check_records(wal, records, stopped is not None)
            _check_reads(wal, records, reads, trust_index=not _has_index(files))
        finally:
            wal.close()
    assert fs.fingerprint() == before, "a readonly open changed the directory"


def _cross_check(files: Tree, result: Result) -> None:
    """Readonly and writable opens agree; verify finds whatever makes open raise."""
    if "META" in files or "LOCK" in files:
        return  # open checks the checkpoint and trusts the published durable LSN; verify not
    ran = "tolerate_tail" in result.errors or "tolerate_tail" in result.records
    if not ran:
        return
    err = result.errors.get("tolerate_tail")
    if "readonly" in result.errors or "readonly" in result.records:
        ro = result.errors.get("readonly")
        assert type(ro) is type(err), f"readonly open: {ro!r}, tolerate_tail open: {err!r}"
        if err is None:
            assert result.records["readonly"] == result.records["tolerate_tail"], (
                "readonly and writable opens see different records"
            )
    if result.verify is not None and isinstance(
        err, segwal.CorruptionError | segwal.UnsupportedFormatError
    ):
        assert not result.verify.ok, f"open raised {err!r} but verify says ok"


# -- known findings ------------------------------------------------------------------------

# Findings so far, all fixed; their seeds in tests/fuzz_seeds/ replay as regressions.
FIXED_FINDINGS: Final = {
    "F1": "LSN space not bounded: appending past LSN 2**64-1 (or creating the segment after a "
    "seal that claims it) raises struct.error, not a SegwalError",
    "F2": "an empty sealed last segment is replaced by the new active segment of the same "
    "name; the next open raises ContinuityError (sequence does not follow)",
    "F3": "the frame scan (verify, and open for the last segment) does not check that a seal's "
    "first LSN equals its header's: verify says ok where open raises SealError, and a last "
    "segment with such a seal is accepted as sealed, so the next open raises SealError",
    "F4": "read(lsn) after damage in a sealed segment's frame length raises NotFoundError "
    "('no longer in the log') instead of CorruptionError: the head-skip jumps past the end",
    "F5": "a META checkpoint past the end of the log is accepted: first_lsn > last_lsn + 1 and "
    "records appended afterwards are invisible to replay and read",
    "F6": "a seal that claims more LSNs than its frames hold (valid CRC) is trusted: replay ends "
    "early without an error, and 'truncate' recovery leaves a gap in the LSNs",
}


# Findings not fixed yet (counted by the fuzz run instead of failing it): none today.
KNOWN_FINDINGS: Final[dict[str, str]] = {}


def known_finding(exc: BaseException, data: bytes) -> str | None:
    """Which known (not yet fixed) finding ``exc`` raised on ``data`` is, if any."""
    finding = _classify(exc, data)
    return finding if finding in KNOWN_FINDINGS else None


def _classify(exc: BaseException, data: bytes) -> str | None:
    """Which finding, fixed or not, ``exc`` raised on ``data`` looks like."""
    msg = str(exc)
    if isinstance(exc, struct.error):
        return "F1"
    if isinstance(exc, AssertionError) and "reopen after" in msg and "does not follow" in msg:
        return "F2"
    if ("but verify says ok" in msg or "reopen after" in msg) and re.search(
        r"SealError\('seal disagrees with its segment \(data end \d+, first LSN", msg
    ):
        return "F3"
    if re.search(r"read\(\d+\) not found in", msg):
        return "F4"
    files = decode(data).files
    meta = "META" in files
    if meta and re.search(r"replay ends at|checkpoint keeps LSN|records changed across", msg):
        return "F5"
    if not meta and re.search(r"replay ends at \d+, not \d+|records changed across", msg):
        return "F6"
    return None


# -- the target ---------------------------------------------------------------------------


def fuzz_one(data: bytes) -> None:
    """The fuzz target: decode ``data`` into a directory and checks, and run them."""
    prog = decode(data)
    run(
        prog.files,
        modes=prog.modes,
        readonly=prog.readonly,
        append=prog.append,
        reads=prog.reads,
    )


V2_FLAVOURS: Final = ("zstd", "zstd+aes", "zstd+dict")


@functools.cache
def v2_reference(flavour: str) -> dict[str, bytes | None]:
    """A format v2 log written by segwal: compressed (zstd) frames, encrypted too for
    "zstd+aes" (the tests' key ring, keys derived from a fixed secret), compressed with a
    trained dictionary for "zstd+dict" (its ``.zdict`` file is one of the files, so the
    mutations reach it); three sealed 1 KiB segments, JSON-like batches and single appends,
    the last two batches unsynced."""
    from cipherkeys import CounterKeys
    from dictlib import trained

    fs = MemoryFileSystem()
    keys = CounterKeys() if "aes" in flavour else None
    config = WalConfig(
        segment_bytes=SEGMENT_BYTES,
        sync="never",
        filesystem=fs,
        clock=Clock(),
        compression="zstd",
        compression_dictionary=trained() if "dict" in flavour else None,
        keys=keys,
    )
    wal = segwal.Wal(LOG, config)
    step = 0
    while len(wal.segments()) < 4:
        step += 1
        batch = [b'{"step": %d, "i": %d, "pad": "%s"}' % (step, i, b"ab" * 20) for i in range(6)]
        wal.append_batch(batch, type=step % 3)
        wal.append(ref_payload(wal.last_lsn + 1), type=1)
        if len(wal.segments()) == 4:
            wal.sync()
    wal.append_batch([b'{"tail": %d}' % i * 9 for i in range(5)])
    wal.append(b"last")
    tree = fs.tree(LOG)
    zdict_suffix = ".zdict"
    assert ("dict" in flavour) == any(p.endswith(zdict_suffix) for p in tree)
    del wal  # as a killed writer leaves it: no clean-close mark
    return {
        posixpath.basename(p): c
        for p, c in tree.items()
        if c is not None and (SEGMENT_RE.match(posixpath.basename(p)) or p.endswith(zdict_suffix))
    }


def fuzz_v2_one(data: bytes) -> None:
    """The fuzz target on a format v2 log: the first byte picks the flavour, the rest is a
    program as for ``fuzz_one`` (the same mutations and checks, opened with the key ring
    when the log is encrypted)."""
    flavour = V2_FLAVOURS[data[0] % len(V2_FLAVOURS)] if data else V2_FLAVOURS[0]
    prog = decode(data, (flavour, v2_reference(flavour)))
    if "aes" in flavour:
        from cipherkeys import CounterKeys

        _KEYS.append(CounterKeys())
    try:
        run(prog.files, modes=prog.modes, readonly=prog.readonly, append=prog.append)
    finally:
        _KEYS.clear()


def describe(data: bytes) -> str:
    """What an input does, for a finding's report."""
    prog = decode(data)
    sizes = {n: (None if c is None else len(c)) for n, c in sorted(prog.files.items())}
    return (
        f"flavour={prog.flavour} modes={prog.modes} readonly={prog.readonly} "
        f"append={prog.append} reads={prog.reads}\n  ops: {prog.done}\n  files: {sizes}"
    )


__all__ = [
    "FLAVOURS",
    "KNOWN_FINDINGS",
    "LOG",
    "OPCODES",
    "Clock",
    "RefLog",
    "RefSegment",
    "Result",
    "Unit",
    "decode",
    "describe",
    "encode_frame",
    "encode_header",
    "encode_op",
    "encode_seal",
    "fuzz_one",
    "header_index",
    "known_finding",
    "make_fs",
    "open_log",
    "reference_logs",
    "rekey",
    "replay_all",
    "run",
    "seg_name",
]
