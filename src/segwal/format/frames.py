"""Opaque frames of format version 2: encoding a batch compressed and/or encrypted, and
getting a frame's plain body (lengths table + payloads) back.

A plain frame's records lie in the segment buffer itself; an opaque frame's are decoded
into a buffer of their own first and then handed to the same records decoder
(``format.records``, C when built), so compression and encryption never change how records
are found. The order is fixed: compress, then encrypt; decrypt, then decompress.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from segwal.format.cipher import SegmentKey, open_body, seal_into
from segwal.format.codecs import MIN_INPUT_BYTES, Compressor, decompress, worth_it
from segwal.format.features import (
    FRAME_COMMIT,
    FRAME_COMPRESSED,
    FRAME_ENCRYPTED,
    FRAME_OPAQUE,
    NONCE_SIZE,
    PLAIN_SIZE,
    TAG_SIZE,
)
from segwal.format.framing import encode_frames, split_batch
from segwal.format.layout import (
    FRAME_HEAD,
    FRAME_HEAD_SIZE,
    FRAME_TARGET_BYTES,
    MAX_FRAME_RECORDS,
    FormatError,
    SegmentHeader,
    crc32c,
)
from segwal.format.scanner import Frame

Buffer = bytes | bytearray | memoryview
_U32 = struct.Struct("<I")
KIND_RECORDS: Final = 0x52


class FrameEncoder:
    """Encodes the batches of one segment whose header turns compression or encryption on.

    Each frame is transformed alone, after batching: compressed when that saves at least an
    eighth and 64 bytes (else stored raw, with no flag), then encrypted under a fresh nonce.
    """

    def __init__(
        self, header: SegmentHeader, compressor: Compressor | None, key: SegmentKey | None
    ) -> None:
        if not header.raw:
            raise ValueError("the encoder needs the header's bytes (decode_header gives them)")
        self.header = header
        self.compressor = compressor
        self.key = key

    def stores_raw(self, size: int) -> bool:
        """Whether a one-record batch of ``size`` bytes gets a version 1 frame (too small
        to compress, not encrypted): the appender then takes its fast path."""
        limit = self.compressor.min_input if self.compressor is not None else MIN_INPUT_BYTES
        return self.key is None and 4 + size <= limit

    def encode(
        self,
        *,
        first_lsn: int,
        record_type: int,
        timestamp_us: int,
        durable_lsn: int,
        payloads: list[bytes],
        lengths: list[int],
        prepared: Prepared | None = None,
    ) -> bytearray:
        """Encode one batch as frames (the last carries COMMIT), split as version 1 splits.

        ``prepared`` (from ``prepare``, made before the log lock was taken) saves the
        compression, when it was made with this encoder's codec.
        """
        codec = self.compressor.codec_id if self.compressor is not None else 0
        if prepared is None or prepared.codec_id != codec:
            prepared = prepare(self.compressor, payloads, lengths)
        bodies = prepared.bodies
        if len(bodies) == 1:  # one frame: no copy into a joined buffer
            _, _, body, compressed = bodies[0]
            return self._frame(
                first_lsn,
                record_type,
                timestamp_us,
                durable_lsn,
                payloads,
                lengths,
                True,
                body,
                compressed,
            )
        out = bytearray()
        last = len(bodies) - 1
        for i, (start, stop, body, compressed) in enumerate(bodies):
            out += self._frame(
                first_lsn + start,
                record_type,
                timestamp_us,
                durable_lsn,
                payloads[start:stop],
                lengths[start:stop],
                i == last,
                body,
                compressed,
            )
        return out

    def _frame(
        self,
        first_lsn: int,
        record_type: int,
        timestamp_us: int,
        durable_lsn: int,
        payloads: list[bytes],
        lengths: list[int],
        commit: bool,
        stored: bytes | bytearray,
        compressed: bool,
    ) -> bytearray:
        n = len(payloads)
        flags = (FRAME_COMMIT if commit else 0) | (FRAME_COMPRESSED if compressed else 0)
        if self.key is None and not compressed:
            # Not worth compressing and not encrypted: a version 1 frame, read as before.
            return encode_frames(
                seed=self.header.seed,
                first_lsn=first_lsn,
                record_type=record_type,
                timestamp_us=timestamp_us,
                durable_lsn=durable_lsn,
                payloads=payloads,
                lengths=lengths,
            )
        plain_size = 4 * n + sum(lengths)
        key = self.key
        if key is None:
            body = PLAIN_SIZE.size + len(stored)
            frame = bytearray(FRAME_HEAD_SIZE + body)
            frame[FRAME_HEAD_SIZE + PLAIN_SIZE.size :] = stored
        else:
            # Sealed in place: the head, plain size and nonce are written into the frame
            # first, the associated data is read back from it, and the ciphertext and tag
            # go straight into the frame's buffer (no copy of the body, no joined bytes).
            flags |= FRAME_ENCRYPTED
            body = PLAIN_SIZE.size + NONCE_SIZE + len(stored) + TAG_SIZE
            frame = bytearray(FRAME_HEAD_SIZE + body)
        FRAME_HEAD.pack_into(
            frame,
            0,
            0,
            KIND_RECORDS,
            flags,
            record_type,
            n,
            body,
            first_lsn,
            timestamp_us,
            durable_lsn,
        )
        PLAIN_SIZE.pack_into(frame, FRAME_HEAD_SIZE, plain_size)
        if key is not None:
            seal_into(key, self.header.raw, frame, FRAME_HEAD_SIZE + PLAIN_SIZE.size, stored)
        _U32.pack_into(frame, 0, crc32c(memoryview(frame)[4:], self.header.seed))
        return frame


class Prepared(NamedTuple):
    """A batch split into frames, each body compressed when that pays: the part of encoding
    that needs neither LSN nor key, so a writer can do it before taking the log lock."""

    codec_id: int  # 0: not compressed
    bodies: list[tuple[int, int, bytes | bytearray, bool]]  # start, stop, stored, compressed


def prepare(compressor: Compressor | None, payloads: list[bytes], lengths: list[int]) -> Prepared:
    """Split ``payloads`` as version 1 splits a batch, and compress each frame's lengths
    table and payloads alone (kept when that saves an eighth and 64 bytes)."""
    n = len(payloads)
    if not n:
        raise ValueError("a batch holds at least one record")
    codec = compressor.codec_id if compressor is not None else 0
    total = sum(lengths)
    if n <= MAX_FRAME_RECORDS and total <= FRAME_TARGET_BYTES:
        # The common batch: one frame, no walk over the records to find where to split.
        return Prepared(codec, [_body(compressor, payloads, lengths, 0, n, total)])
    bodies = [
        _body(compressor, payloads[start:stop], lengths[start:stop], start, stop, size)
        for start, stop, size in split_batch(lengths)
    ]
    return Prepared(codec, bodies)


def _body(
    compressor: Compressor | None,
    payloads: list[bytes],
    lengths: list[int],
    start: int,
    stop: int,
    total: int,
) -> tuple[int, int, bytes | bytearray, bool]:
    """One frame's lengths table and payloads, compressed when that pays."""
    count = stop - start
    plain = b"".join((struct.pack(f"<{count}I", *lengths), *payloads))
    if len(plain) != 4 * count + total:
        raise ValueError("payload lengths disagree with their bytes")
    if compressor is not None and len(plain) > compressor.min_input:
        packed = compressor.compress(plain)
        if worth_it(len(plain), len(packed), compressor.min_saving):
            return start, stop, packed, True
    return start, stop, plain, False


def plain_body(
    buf: Buffer,
    frame: Frame,
    header: SegmentHeader,
    key: SegmentKey | None,
    path: str | None = None,
    scratch: memoryview | None = None,
    dictionary: object | None = None,
) -> tuple[Buffer, int, int]:
    """``(buffer, table offset, end)`` of a checked frame's lengths table and payloads.

    A plain frame's lie in ``buf``; an opaque frame's are decrypted and decompressed into a
    new buffer (decompressed with ``dictionary`` when the header names one). Raises
    FormatError (AuthenticationFailed when a frame does not authenticate). The scanner has
    checked the CRC (or deferred it to the tag), bounded the plain size by the maximum
    frame size, and held an uncompressed frame's stored size to its plain size.

    ``scratch``: a writable buffer (a memoryview of a bytearray) the caller reuses from
    frame to frame. An encrypted frame's body that fits is decrypted into it (no buffer
    allocated and zeroed per frame) and, when not compressed, the result is a view of
    ``scratch``: the caller must be done with it, records decoded and copied out, before
    the next frame. This is the per-frame work of an encrypted replay: each object made
    here costs about as much as decrypting a 100-byte record, so few are made.
    """
    flags = frame.opaque
    offset = frame.offset
    end = offset + frame.length
    if not flags & FRAME_OPAQUE:
        return buf, offset + FRAME_HEAD_SIZE, end
    pos = offset + FRAME_HEAD_SIZE + PLAIN_SIZE.size
    view = memoryview(buf)
    data: bytes | memoryview
    if flags & FRAME_ENCRYPTED:
        if key is None:
            raise ValueError("an encrypted frame needs its segment's key")
        body_at = pos + NONCE_SIZE
        stored = end - body_at - TAG_SIZE  # the plain size, unless compressed
        into = scratch[:stored] if scratch is not None and len(scratch) >= stored else None
        nonce = buf[pos:body_at]  # bytes, as a read gives: a copy of 12 bytes, no call
        if not isinstance(nonce, bytes):
            nonce = bytes(nonce)
        # The associated data in one join: the header, then the frame from offset 4 to the
        # end of its nonce.
        data = open_body(
            key, nonce, header.raw + view[offset + 4 : body_at], view[body_at:end], into
        )
        if not flags & FRAME_COMPRESSED:
            return data, 0, len(data)  # stored == plain size: the scanner checked it
    else:
        data = view[pos:end]
    (size,) = PLAIN_SIZE.unpack_from(buf, offset + FRAME_HEAD_SIZE)
    if flags & FRAME_COMPRESSED:
        data = decompress(header.compression_id, data, size, path, dictionary)
    elif len(data) != size:
        raise FormatError(f"frame body of {len(data)} bytes, its plain size says {size}")
    return data, 0, len(data)
