"""Frame boundaries over a buffer: verdicts on frames, record decoding, and the search for
a valid frame after damage.

The scanner never opens a file and never decides what to do about damage: it says what it
sees (a frame, a seal, too few bytes, or bad bytes and why) and the caller decides. A length
is checked against the maximum frame size and the bytes at hand before anything is sliced.
"""

from __future__ import annotations

import struct
from enum import Enum
from typing import Final, NamedTuple

from segwal.format.features import (
    FRAME_COMPRESSED,
    FRAME_ENCRYPTED,
    FRAME_OPAQUE,
    HEADER_ENCRYPTED,
    PLAIN_SIZE,
    TAG_SIZE,
    allowed_frame_flags,
    opaque_prefix,
)
from segwal.format.layout import (
    FLAG_COMMIT,
    FRAME_HEAD,
    FRAME_HEAD_SIZE,
    KIND_RECORDS,
    KIND_SEAL,
    MAX_LSN,
    SEAL_SIZE,
    FormatError,
    Seal,
    crc32c,
    decode_seal,
)
from segwal.format.records import length_total as _length_total
from segwal.format.records import record_spans as _record_spans

_KIND_OFFSET: Final = 4
_FRAME_HEAD_UNPACK = FRAME_HEAD.unpack_from
_CRC: Final = struct.Struct("<I")  # a frame's first field


class Status(Enum):
    """What the scanner sees at an offset."""

    FRAME = "frame"  # a whole records frame with a valid checksum
    SEAL = "seal"  # a valid seal
    END = "end"  # no bytes left
    SHORT = "short"  # fewer bytes than the frame claims (torn, or read more)
    BAD = "bad"  # bytes that cannot be a valid frame here


class Frame(NamedTuple):
    """A checked records frame at ``offset`` of its buffer (a tuple: cheap to make)."""

    offset: int
    length: int
    commit: bool
    record_type: int
    count: int  # type: ignore[assignment]  # shadows tuple.count on purpose
    body_len: int
    first_lsn: int
    timestamp_us: int
    durable_lsn: int
    opaque: int = 0  # version 2: FRAME_COMPRESSED / FRAME_ENCRYPTED bits (format.frames)
    # An encrypted frame whose CRC was left to its reader (``check(..., defer_crc=True)``):
    # its tag authenticates the same bytes; ``crc_ok`` classifies one that does not.
    crc_deferred: bool = False

    @property
    def last_lsn(self) -> int:
        return self.first_lsn + self.count - 1

    @property
    def end(self) -> int:
        return self.offset + self.length


class Verdict(NamedTuple):
    """The scanner's verdict on the bytes at one offset."""

    status: Status
    frame: Frame | None = None
    seal: Seal | None = None
    reason: str = ""
    needed: int = 0  # for SHORT: bytes from the offset that the frame claims
    offset: int = -1  # set by find_valid: where in the buffer the frame or seal starts


def check(
    buf: bytes | bytearray | memoryview,
    pos: int,
    end: int,
    seed: int,
    max_frame: int,
    features: int = 0,
    *,
    defer_crc: bool = False,
) -> Verdict:
    """Check the frame or seal starting at ``buf[pos]``, looking no further than ``end``.

    ``features`` are the segment header's flags (version 2): they say which frame flags
    are valid. An opaque frame's plain size is bounded here, before anything decodes it.

    ``defer_crc``: the caller holds the key and authenticates every encrypted frame before
    it uses one (the tag covers the head from offset 4, the nonce and the ciphertext, all
    the CRC covers), so an encrypted frame's CRC is not computed here: the frame comes back
    with ``crc_deferred`` set, and the caller checks the CRC with ``crc_ok`` when the
    frame does not authenticate, to report damage as a checksum mismatch like any other.
    Every other verdict is the one ``check`` gives without it.
    """
    avail = end - pos
    if avail <= 0:
        return Verdict(Status.END)
    if avail <= _KIND_OFFSET:
        return Verdict(Status.SHORT, reason="incomplete frame head", needed=FRAME_HEAD_SIZE)
    kind = buf[pos + _KIND_OFFSET]
    if kind == KIND_SEAL:
        if avail < SEAL_SIZE:
            return Verdict(Status.SHORT, reason="incomplete seal", needed=SEAL_SIZE)
        try:
            seal = decode_seal(memoryview(buf)[pos : pos + SEAL_SIZE], seed)
        except FormatError as exc:
            return Verdict(Status.BAD, reason=exc.reason)
        return Verdict(Status.SEAL, seal=seal)
    if kind != KIND_RECORDS:
        return Verdict(Status.BAD, reason=f"no frame (kind byte {kind:#04x})")
    if avail < FRAME_HEAD_SIZE:
        return Verdict(Status.SHORT, reason="incomplete frame head", needed=FRAME_HEAD_SIZE)
    crc, _kind, flags, rtype, count, body_len, first_lsn, ts, durable = _FRAME_HEAD_UNPACK(buf, pos)
    opaque = flags & FRAME_OPAQUE
    if flags & ~(allowed_frame_flags(features) if features else FLAG_COMMIT):
        return Verdict(Status.BAD, reason=f"unknown frame flags {flags:#04x}")
    if features & HEADER_ENCRYPTED and not flags & FRAME_ENCRYPTED:
        return Verdict(Status.BAD, reason="a frame of an encrypted segment is not encrypted")
    if count == 0:
        return Verdict(Status.BAD, reason="frame with no record")
    if first_lsn + count - 1 > MAX_LSN:
        return Verdict(Status.BAD, reason=f"frame LSNs from {first_lsn} are out of range")
    if opaque:
        length = FRAME_HEAD_SIZE + body_len
        if body_len < opaque_prefix(flags) + (TAG_SIZE if flags & FRAME_ENCRYPTED else 0):
            return Verdict(Status.BAD, reason=f"opaque frame body of {body_len} bytes is too short")
    else:
        length = FRAME_HEAD_SIZE + 4 * count + body_len
    if length > max_frame:
        return Verdict(Status.BAD, reason=f"frame length {length} exceeds the maximum {max_frame}")
    if length > avail:
        return Verdict(Status.SHORT, reason=f"frame of {length} bytes is cut short", needed=length)
    deferred = defer_crc and bool(flags & FRAME_ENCRYPTED)
    if not deferred and crc32c(memoryview(buf)[pos + 4 : pos + length], seed) != crc:
        return Verdict(Status.BAD, reason="frame checksum mismatch")
    if opaque:
        reason = _opaque_sizes(buf, pos, flags, count, body_len, max_frame)
        if reason:
            if deferred and crc32c(memoryview(buf)[pos + 4 : pos + length], seed) != crc:
                reason = "frame checksum mismatch"  # what the CRC, checked first, says
            return Verdict(Status.BAD, reason=reason)
    elif _length_total(buf, pos + FRAME_HEAD_SIZE, count) != body_len:
        return Verdict(Status.BAD, reason="record lengths disagree with the frame's body size")
    return Verdict(
        Status.FRAME,
        frame=Frame(
            pos,
            length,
            bool(flags & FLAG_COMMIT),
            rtype,
            count,
            body_len,
            first_lsn,
            ts,
            durable,
            opaque,
            deferred,
        ),
    )


def crc_ok(buf: bytes | bytearray | memoryview, frame: Frame, seed: int) -> bool:
    """Whether a checked frame's stored CRC matches its bytes (always true unless the
    check deferred it): what a reader asks when a deferred frame fails to authenticate."""
    if not frame.crc_deferred:
        return True
    pos = frame.offset
    (crc,) = _CRC.unpack_from(buf, pos)
    return bool(crc32c(memoryview(buf)[pos + 4 : pos + frame.length], seed) == crc)


def _opaque_sizes(
    buf: bytes | bytearray | memoryview, pos: int, flags: int, count: int, body: int, limit: int
) -> str:
    """Why an opaque frame's plain size cannot be true ("" if it can): it must hold the
    lengths table and fit a frame, so a lying size or a bomb is refused before decoding."""
    (size,) = PLAIN_SIZE.unpack_from(buf, pos + FRAME_HEAD_SIZE)
    if not 4 * count <= size <= limit - FRAME_HEAD_SIZE:
        return f"plain size {size} of {count} records is out of bounds"
    stored = body - opaque_prefix(flags) - (TAG_SIZE if flags & FRAME_ENCRYPTED else 0)
    if not flags & FRAME_COMPRESSED and stored != size:
        return f"uncompressed frame stores {stored} bytes, its plain size says {size}"
    return ""


def record_spans(buf: bytes | bytearray | memoryview, frame: Frame) -> list[tuple[int, int]]:
    """The (start, end) offsets in ``buf`` of each record payload of a checked frame."""
    return _record_spans(buf, frame.offset + FRAME_HEAD_SIZE, frame.count, frame.end)


def find_valid(
    buf: bytes | bytearray | memoryview,
    start: int,
    stop: int,
    end: int,
    seed: int,
    max_frame: int,
    *,
    include_short: bool = False,
    features: int = 0,
) -> Verdict | None:
    """The first valid frame or seal starting in ``[start, stop)`` and ending by ``end``.

    Used after damage: any valid frame after it means the damage is not a torn tail. Only
    offsets whose kind byte could start a frame are checked, so zeros cost nothing. With
    ``include_short``, a plausible frame that runs past ``end`` is returned too (SHORT, with
    the bytes it needs), so a caller reading windows can fetch it whole and check it.
    """
    data = bytes(buf) if isinstance(buf, memoryview) else buf
    stop = min(stop, end - FRAME_HEAD_SIZE + 1)
    candidates = []
    for kind in (KIND_RECORDS, KIND_SEAL):
        hit = data.find(kind, start + _KIND_OFFSET, stop + _KIND_OFFSET)
        candidates.append(hit)
    while True:
        live = [c for c in candidates if c >= 0]
        if not live:
            return None
        hit = min(live)
        pos = hit - _KIND_OFFSET
        verdict = check(data, pos, end, seed, max_frame, features)
        if verdict.status in (Status.FRAME, Status.SEAL) or (
            include_short and verdict.status is Status.SHORT
        ):
            return verdict._replace(offset=pos)
        idx = candidates.index(hit)
        kind = KIND_RECORDS if idx == 0 else KIND_SEAL
        candidates[idx] = data.find(kind, hit + 1, stop + _KIND_OFFSET)
