"""On-disk format v1: byte layouts, checksums, and encode/decode of headers, frames and seals.

Everything here is pure: bytes in, values out. ``docs/FORMAT.md`` is the prose version of
this module and the golden files in ``tests/golden`` pin it. All integers are little-endian.

Segment file::

    +----------------------+  offset 0
    | segment header (128) |
    +----------------------+  offset 128
    | records frame        |  one or more per batch; the last one carries COMMIT
    | records frame        |
    | ...                  |
    +----------------------+
    | seal (128)           |  only in a sealed segment; nothing follows it
    +----------------------+

Segment header (128 bytes)::

    0   8  magic            b"\\x89SEGWAL\\n"
    8   2  version          1, or 2 when a flag of format/features.py is set
    10  2  flags            0 in version 1 (any other bit: a newer format)
    12  1  checksum id      1 = CRC32C
    13  1  compression id   0 = none (reserved for later versions)
    14  1  encryption id    0 = none (reserved for later versions)
    15  1  reserved         0
    16 16  log id           random, chosen when the log is created
    32  8  segment sequence 0 for the first segment, +1 for each next one
    40  8  first LSN        equals the number in the file name
    48  8  created_us       microseconds since the Unix epoch
    56  4  max record bytes the writer's limit; bounds frame lengths for readers
    60  4  header size      128
    64 32  previous digest  BLAKE3-256 of the previous sealed segment, zeros for the first
    96 28  reserved         zeros in v1; key id, salt, dictionary id in v2
    124 4  header CRC32C    over bytes 0..123; also the seed of every frame CRC

Records frame (40-byte head, then a length table, then the payloads)::

    0   4  CRC32C           over bytes 4..end, seeded with the header CRC
    4   1  kind             0x52 ("R")
    5   1  flags            bit 0: COMMIT, the last frame of its batch
    6   2  record type      chosen by the user, shared by the frame's records
    8   4  count            records in the frame, >= 1
    12  4  body bytes       sum of the payload lengths
    16  8  first LSN        LSN of the frame's first record; the rest follow by one
    24  8  timestamp_us     append time, never decreasing within a log
    32  8  durable LSN      the log's durable LSN when the frame was written
    40 4n  lengths          u32 per record
    ..     payloads         concatenated

The seal (128 bytes, the last of a sealed segment) and version 2 (header flags, opaque
frames: ``format/features.py``) are laid out in ``docs/FORMAT.md``; records frames are encoded
by ``format/framing.py``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

import crc32c as _crc32c

from segwal.format.features import (
    CIPHER_AES_256_GCM,
    CIPHER_CHACHA20_POLY1305,
    COMPRESSION_LZ4,
    COMPRESSION_ZSTD,
    HEADER_COMPRESSED,
    HEADER_ENCRYPTED,
    HEADER_PREALLOCATED,
    KNOWN_HEADER_FLAGS,
    SALT_SIZE,
    V2_FIELDS,
    VERSION_2,
)

MAGIC: Final = b"\x89SEGWAL\n"
VERSION: Final = 1
CHECKSUM_CRC32C: Final = 1
COMPRESSION_NONE: Final = 0
ENCRYPTION_NONE: Final = 0
KNOWN_CHECKSUMS: Final = {CHECKSUM_CRC32C: "crc32c"}
KNOWN_COMPRESSIONS: Final = {COMPRESSION_NONE: "none"}
KNOWN_ENCRYPTIONS: Final = {ENCRYPTION_NONE: "none"}
V2_COMPRESSIONS: Final = {COMPRESSION_ZSTD: "zstd", COMPRESSION_LZ4: "lz4"}
V2_ENCRYPTIONS: Final = {CIPHER_AES_256_GCM: "aes-256-gcm", CIPHER_CHACHA20_POLY1305: "chacha20"}

HEADER = struct.Struct("<8sHHBBBB16sQQQII32s28sI")
HEADER_SIZE: Final = HEADER.size  # 128

FRAME_HEAD = struct.Struct("<IBBHIIQQQ")
FRAME_HEAD_SIZE: Final = FRAME_HEAD.size  # 40
KIND_RECORDS: Final = 0x52
KIND_SEAL: Final = 0x53
FLAG_COMMIT: Final = 0x01

SEAL = struct.Struct("<IBBHII7Q32s24s")
SEAL_SIZE: Final = SEAL.size  # 128

DIGEST_SIZE: Final = 32
ZERO_DIGEST: Final = bytes(DIGEST_SIZE)
MAX_U32: Final = 0xFFFFFFFF
MAX_U64: Final = 0xFFFFFFFFFFFFFFFF
# LSNs stay below 2**63 so that every "last + 1" and "next LSN" fits its u64 field: a header,
# seal or frame claiming more is damage (no writer gets there: 2**63 appends).
MAX_LSN: Final = (1 << 63) - 1

# Payload bytes a writer puts in one frame before it starts the next one of the same batch;
# it bounds the memory a reader needs per frame (a larger single record gets its own frame).
FRAME_TARGET_BYTES: Final = 1 << 20
MAX_FRAME_RECORDS: Final = 1 << 16
_U32 = struct.Struct("<I")

crc32c = _crc32c.crc32c

assert HEADER_SIZE == 128 and FRAME_HEAD_SIZE == 40 and SEAL_SIZE == 128


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentHeader:
    """The decoded header of one segment."""

    version: int
    flags: int
    checksum_id: int
    compression_id: int
    encryption_id: int
    log_id: bytes
    sequence: int
    first_lsn: int
    created_us: int
    max_record_bytes: int
    prev_digest: bytes
    seed: int  # the header CRC, which seeds every frame checksum of the segment
    key_id: int = 0  # version 2 encrypted segments only, like salt
    salt: bytes = bytes(SALT_SIZE)
    dict_id: int = 0
    raw: bytes = field(default=b"", compare=False, repr=False)  # encrypted frames' AD


@dataclass(frozen=True, slots=True, kw_only=True)
class Seal:
    """The decoded seal of one sealed segment."""

    first_lsn: int
    last_lsn: int
    count: int
    min_ts: int
    max_ts: int
    data_end: int
    sealed_us: int
    digest: bytes


class FormatError(Exception):
    """Raised by the decoders here; callers turn it into a CorruptionError with a path."""

    def __init__(self, reason: str, *, newer: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.newer = newer  # the bytes look like a newer or unknown format, not damage


def encode_header(
    *,
    log_id: bytes,
    sequence: int,
    first_lsn: int,
    created_us: int,
    max_record_bytes: int,
    prev_digest: bytes,
    compression_id: int = COMPRESSION_NONE,
    encryption_id: int = ENCRYPTION_NONE,
    key_id: int = 0,
    salt: bytes = bytes(SALT_SIZE),
    dict_id: int = 0,
    preallocated: bool = False,
) -> bytes:
    """Encode a segment header; the CRC at its end also seeds the segment's frames.

    Version 1 unless compression, encryption or preallocation is on: then version 2 with
    their flags. ``dict_id`` names the zstd dictionary the segment's compressed frames use
    (0: none).
    """
    if len(log_id) != 16 or len(prev_digest) != DIGEST_SIZE or len(salt) != SALT_SIZE:
        raise ValueError("log id must be 16 bytes, the previous digest 32 and the salt 16")
    flags = (compression_id and HEADER_COMPRESSED) | (encryption_id and HEADER_ENCRYPTED)
    flags |= HEADER_PREALLOCATED if preallocated else 0
    if compression_id not in (0, *V2_COMPRESSIONS) or encryption_id not in (0, *V2_ENCRYPTIONS):
        raise ValueError(f"unknown compression {compression_id} or encryption {encryption_id}")
    if dict_id and compression_id != COMPRESSION_ZSTD:
        raise ValueError("a dictionary id needs zstd compression")
    if not 0 <= dict_id <= MAX_U32:
        raise ValueError(f"dictionary id {dict_id} is not a u32")
    if not encryption_id:
        key_id = 0
    reserved = V2_FIELDS.pack(
        key_id, salt if encryption_id else bytes(SALT_SIZE), dict_id, bytes(4)
    )
    body = HEADER.pack(
        MAGIC,
        VERSION_2 if flags else VERSION,
        flags,
        CHECKSUM_CRC32C,
        compression_id,
        encryption_id,
        0,
        log_id,
        sequence,
        first_lsn,
        created_us,
        max_record_bytes,
        HEADER_SIZE,
        prev_digest,
        reserved,
        0,
    )
    return body[:-4] + struct.pack("<I", crc32c(body[:-4]))


def decode_header(data: bytes | memoryview) -> SegmentHeader:
    """Decode and check a segment header; raise FormatError saying what is wrong."""
    if len(data) < HEADER_SIZE:
        raise FormatError(
            f"segment is {len(data)} bytes, shorter than its {HEADER_SIZE}-byte header"
        )
    (
        magic,
        version,
        flags,
        checksum_id,
        compression_id,
        encryption_id,
        _reserved,
        log_id,
        sequence,
        first_lsn,
        created_us,
        max_record_bytes,
        header_size,
        prev_digest,
        reserved,
        crc,
    ) = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise FormatError(f"bad magic {bytes(magic)!r}, not a segwal segment")
    # Every version keeps this CRC over the first 124 bytes, so a damaged version field
    # reads as damage, and only an intact header can say it is newer.
    if crc32c(bytes(data[: HEADER_SIZE - 4])) != crc:
        raise FormatError("header checksum mismatch")
    if version > VERSION_2:
        raise FormatError(f"format version {version} is newer than {VERSION_2}", newer=True)
    if version not in (VERSION, VERSION_2) or header_size != HEADER_SIZE:
        raise FormatError(f"unknown format version {version} with header size {header_size}")
    key_id, salt, dict_id, _spare = V2_FIELDS.unpack(reserved)
    if version == VERSION:
        _check_ids(flags, checksum_id, compression_id, encryption_id, {}, {})
        key_id, salt, dict_id = 0, bytes(SALT_SIZE), 0  # reserved bytes mean nothing in v1
    else:
        _check_ids(
            flags, checksum_id, compression_id, encryption_id, V2_COMPRESSIONS, V2_ENCRYPTIONS
        )
        if dict_id and compression_id != COMPRESSION_ZSTD:
            # Only zstd frames use a dictionary (format/dictionary.py): damage, not newer.
            raise FormatError(f"dictionary id {dict_id} in a segment not compressed with zstd")
    if not 1 <= first_lsn <= MAX_LSN:
        raise FormatError(f"first LSN {first_lsn} is out of range")
    return SegmentHeader(
        version=version,
        flags=flags,
        checksum_id=checksum_id,
        compression_id=compression_id,
        encryption_id=encryption_id,
        log_id=bytes(log_id),
        sequence=sequence,
        first_lsn=first_lsn,
        created_us=created_us,
        max_record_bytes=max_record_bytes,
        prev_digest=bytes(prev_digest),
        seed=crc,
        key_id=key_id,
        salt=bytes(salt),
        dict_id=dict_id,
        raw=bytes(data[:HEADER_SIZE]),
    )


def _check_ids(
    flags: int,
    checksum_id: int,
    compression_id: int,
    encryption_id: int,
    compressions: dict[int, str],
    encryptions: dict[int, str],
) -> None:
    """Flags and ids a reader knows, and each id present exactly when its flag is set."""
    known = KNOWN_HEADER_FLAGS if compressions else 0
    if flags & ~known:
        raise FormatError(f"unknown header flags {flags:#x}", newer=True)
    if checksum_id not in KNOWN_CHECKSUMS:
        raise FormatError(f"unknown checksum id {checksum_id}", newer=True)
    for name, value, flag, ids in (
        ("compression", compression_id, HEADER_COMPRESSED, compressions),
        ("encryption", encryption_id, HEADER_ENCRYPTED, encryptions),
    ):
        if value and value not in ids:
            raise FormatError(f"unknown {name} id {value}", newer=True)
        if bool(value) != bool(flags & flag):
            raise FormatError(f"{name} id {value} disagrees with header flags {flags:#x}")


def encode_seal(
    *,
    seed: int,
    first_lsn: int,
    last_lsn: int,
    count: int,
    min_ts: int,
    max_ts: int,
    data_end: int,
    sealed_us: int,
    digest: bytes,
) -> bytes:
    """Encode the seal that closes a segment for good."""
    body = SEAL.pack(
        0,
        KIND_SEAL,
        0,
        0,
        SEAL_SIZE,
        0,
        first_lsn,
        last_lsn,
        count,
        min_ts,
        max_ts,
        data_end,
        sealed_us,
        digest,
        bytes(24),
    )
    crc = crc32c(memoryview(body)[4:], seed)
    return struct.pack("<I", crc) + body[4:]


def decode_seal(data: bytes | memoryview, seed: int) -> Seal:
    """Decode and check a seal; raise FormatError saying what is wrong."""
    if len(data) < SEAL_SIZE:
        raise FormatError("too short for a seal")
    (
        crc,
        kind,
        flags,
        _r1,
        size,
        _r2,
        first_lsn,
        last_lsn,
        count,
        min_ts,
        max_ts,
        data_end,
        sealed_us,
        digest,
        _r3,
    ) = SEAL.unpack_from(data, 0)
    if kind != KIND_SEAL:
        raise FormatError(f"no seal (kind byte {kind:#04x})")
    if crc32c(bytes(data[4:SEAL_SIZE]), seed) != crc:
        raise FormatError("seal checksum mismatch")
    if size != SEAL_SIZE or flags != 0:
        raise FormatError(f"unknown seal layout (size {size}, flags {flags:#x})")
    if last_lsn > MAX_LSN or first_lsn > MAX_LSN:
        raise FormatError(f"seal LSNs {first_lsn}..{last_lsn} are out of range")
    if last_lsn + 1 - first_lsn != count:
        raise FormatError(f"seal counts {count} records for LSNs {first_lsn}..{last_lsn}")
    return Seal(
        first_lsn=first_lsn,
        last_lsn=last_lsn,
        count=count,
        min_ts=min_ts,
        max_ts=max_ts,
        data_end=data_end,
        sealed_us=sealed_us,
        digest=bytes(digest),
    )
