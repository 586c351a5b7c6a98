"""Records frames of format v1: encoding a batch or one record into frames, and their limits.

Pure, like :mod:`segwal.format.layout` (the header, the frame head and the seal): bytes in,
values out. ``encode_record`` is the reference of the compiled one-record encoder
(``segwal.format._encode``), which raises what ``record_error`` returns for bad input.
"""

from __future__ import annotations

import operator
import struct

from segwal.format.features import (
    OPAQUE_OVERHEAD,
)
from segwal.format.layout import (
    _U32,
    FLAG_COMMIT,
    FRAME_HEAD,
    FRAME_HEAD_SIZE,
    FRAME_TARGET_BYTES,
    KIND_RECORDS,
    MAX_FRAME_RECORDS,
    MAX_U32,
    MAX_U64,
    crc32c,
)


def max_frame_bytes(max_record_bytes: int, header_flags: int = 0) -> int:
    """The largest frame a writer with this record limit can produce.

    A frame's body is at most FRAME_TARGET_BYTES, or one record of up to max_record_bytes;
    it holds at most MAX_FRAME_RECORDS records, each with a 4-byte length. In a segment
    whose header has feature flags, an opaque frame adds its plain size, nonce and tag to
    the largest plain frame (a full frame of incompressible records, encrypted).
    """
    plain = FRAME_HEAD_SIZE + 4 * MAX_FRAME_RECORDS + max(FRAME_TARGET_BYTES, max_record_bytes)
    return plain + OPAQUE_OVERHEAD if header_flags else plain


def encode_frames(
    *,
    seed: int,
    first_lsn: int,
    record_type: int,
    timestamp_us: int,
    durable_lsn: int,
    payloads: list[bytes],
    lengths: list[int],
) -> bytearray:
    """Encode one batch as records frames; the last frame carries COMMIT.

    ``lengths[i]`` must be ``len(payloads[i])`` in bytes. A frame closes before a record that
    would take its body past FRAME_TARGET_BYTES, so a reader needs one frame in memory at most.
    """
    n = len(payloads)
    if not n:
        raise ValueError("a batch holds at least one record")
    if n <= MAX_FRAME_RECORDS:
        total = sum(lengths)
        if total <= FRAME_TARGET_BYTES or n == 1:
            return _encode_frame(
                seed,
                first_lsn,
                record_type,
                timestamp_us,
                durable_lsn,
                payloads,
                lengths,
                total,
                True,
            )
    # Several frames: every head, lengths table and payload joined into one buffer at once
    # (the payloads copied once, nothing zero-filled), then each frame's CRC stored in place.
    bounds = split_batch(lengths)
    last = len(bounds) - 1
    parts: list[bytes | bytearray | memoryview] = []
    spans = []
    end = 0
    for k, (start, stop, size) in enumerate(bounds):
        n = stop - start
        parts.append(
            FRAME_HEAD.pack(
                0,
                KIND_RECORDS,
                FLAG_COMMIT if k == last else 0,
                record_type,
                n,
                size,
                first_lsn + start,
                timestamp_us,
                durable_lsn,
            )
        )
        parts.append(struct.pack(f"<{n}I", *lengths[start:stop]))
        parts += _sized(payloads[start:stop], lengths[start:stop])
        spans.append((end, FRAME_HEAD_SIZE + 4 * n + size))
        end += spans[-1][1]
    out = bytearray().join(parts)
    if len(out) != end:
        # A payload whose len() is not its size in bytes (a memoryview of wider items).
        raise ValueError("payload lengths disagree with their bytes")
    with memoryview(out) as view:
        for at, length in spans:
            _U32.pack_into(out, at, crc32c(view[at + 4 : at + length], seed))
    return out


def _sized(payloads: list[bytes], lengths: list[int]) -> list[bytes]:
    """``payloads``, each checked to be ``lengths[i]`` bytes: the joined total alone would
    let a payload over and one under in different frames cancel (a memoryview of wider
    items, a len() that is not the size) and split the bytes wrongly. Exact bytes and
    bytearray pay a type test only."""
    for payload, length in zip(payloads, lengths, strict=True):
        kind: type = payload.__class__  # the payloads may be any bytes-like object
        if kind is not bytes and kind is not bytearray:
            with memoryview(payload) as view:
                if view.nbytes != length:
                    raise ValueError("payload lengths disagree with their bytes")
    return payloads


def split_batch(lengths: list[int]) -> list[tuple[int, int, int]]:
    """Where a batch's frames start and stop, with each frame's payload bytes: a frame
    closes before a record that would take its body past FRAME_TARGET_BYTES or its count
    past MAX_FRAME_RECORDS (a single larger record makes a frame of its own). Version 1
    and version 2 split alike."""
    bounds = []
    start = size = 0
    for i, length in enumerate(lengths):
        if i > start and (size + length > FRAME_TARGET_BYTES or i - start >= MAX_FRAME_RECORDS):
            bounds.append((start, i, size))
            start, size = i, 0
        size += length
    bounds.append((start, len(lengths), size))
    return bounds


def _encode_frame(
    seed: int,
    first_lsn: int,
    record_type: int,
    timestamp_us: int,
    durable_lsn: int,
    payloads: list[bytes],
    lengths: list[int],
    body_len: int,
    commit: bool,
) -> bytearray:
    n = len(payloads)
    head = FRAME_HEAD.pack(
        0,
        KIND_RECORDS,
        FLAG_COMMIT if commit else 0,
        record_type,
        n,
        body_len,
        first_lsn,
        timestamp_us,
        durable_lsn,
    )
    frame = bytearray().join((head, struct.pack(f"<{n}I", *lengths), *payloads))
    if len(frame) != FRAME_HEAD_SIZE + 4 * n + body_len:
        # A payload whose len() is not its size in bytes (a memoryview of wider items).
        raise ValueError("payload lengths disagree with their bytes")
    _U32.pack_into(frame, 0, crc32c(memoryview(frame)[4:], seed))
    return frame


def encode_record(
    seed: int,
    lsn: int,
    record_type: int,
    timestamp_us: int,
    durable_lsn: int,
    payload: bytes | bytearray | memoryview,
) -> bytes | bytearray:
    """Encode a one-record batch: the hot path of ``append``, and the pure reference of the
    compiled ``_encode.encode_record`` (selected in ``format/encoder.py``).

    The payload is any C-contiguous bytes-like object, taken as its bytes. Bad input raises
    what ``record_error`` says (the compiled twin raises the same).
    """
    if payload.__class__ is not bytes:
        payload = _payload_bytes(payload)
    n = len(payload)
    try:
        # The seed goes where the CRC will be, so that pack checks its range too.
        head = FRAME_HEAD.pack(
            seed, KIND_RECORDS, FLAG_COMMIT, record_type, 1, n, lsn, timestamp_us, durable_lsn
        )
    except struct.error:
        raise _checked(seed, lsn, record_type, timestamp_us, durable_lsn, payload) from None
    frame = bytearray().join((head, _U32.pack(n), payload))
    _U32.pack_into(frame, 0, crc32c(memoryview(frame)[4:], seed))
    return frame


def _payload_bytes(payload: object) -> memoryview:
    """A payload's bytes as a flat view, whatever its item format."""
    try:
        view = memoryview(payload)  # type: ignore[arg-type]
    except TypeError:
        raise _checked(0, 0, 0, 0, 0, payload) from None
    if not view.c_contiguous:
        raise _checked(0, 0, 0, 0, 0, payload)
    return view.cast("B")


def _checked(*args: object) -> Exception:
    exc = record_error(*args)
    assert exc is not None, "encode_record refused arguments record_error accepts"
    return exc


def record_error(
    seed: object,
    lsn: object,
    record_type: object,
    timestamp_us: object,
    durable_lsn: object,
    payload: object,
) -> Exception | None:
    """What is wrong with ``encode_record``'s arguments, first found first; None if nothing.

    Both encoders raise what this returns, so their errors are the same by construction.
    """
    try:
        view = memoryview(payload)  # type: ignore[arg-type]
    except TypeError:
        return TypeError(f"payload must be a bytes-like object, not {type(payload).__name__}")
    if not view.c_contiguous:
        return BufferError("payload must be a C-contiguous buffer")
    if view.nbytes > MAX_U32:
        return ValueError(f"payload of {view.nbytes} bytes does not fit a frame")
    for name, value, limit in (
        ("seed", seed, MAX_U32),
        ("LSN", lsn, MAX_U64),
        ("record type", record_type, 0xFFFF),
        ("timestamp", timestamp_us, MAX_U64),
        ("durable LSN", durable_lsn, MAX_U64),
    ):
        try:
            number = operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            return TypeError(f"{name} must be an integer, not {type(value).__name__}")
        if not 0 <= number <= limit:
            return ValueError(f"{name} {number} is out of range 0..{limit}")
    return None
