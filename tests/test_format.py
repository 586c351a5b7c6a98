"""On-disk format v1: golden files, hand-checked offsets, and rejection of damaged or newer data.

The golden files in ``tests/golden`` were written by ``tests/golden/make_golden.py``; if a test
here fails because the bytes changed, the format changed: bump the version instead.
"""

from __future__ import annotations

import importlib.util
import re
import struct
from pathlib import Path
from types import ModuleType
from typing import Any

import blake3
import pytest

from segwal.format import layout as fmt
from segwal.format.framing import encode_frames, encode_record, max_frame_bytes
from segwal.format.layout import (
    FRAME_HEAD,
    FRAME_HEAD_SIZE,
    FRAME_TARGET_BYTES,
    HEADER_SIZE,
    MAX_FRAME_RECORDS,
    SEAL_SIZE,
    FormatError,
    Seal,
    SegmentHeader,
    crc32c,
    decode_header,
    decode_seal,
    encode_header,
    encode_seal,
)

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
FORMAT_DOC = Path(__file__).resolve().parent.parent / "docs" / "FORMAT.md"
T0 = 1_700_000_000_000_000
LOG_ID = bytes.fromhex("00112233445566778899aabbccddeeff")
MIB = 1 << 20
SEGMENT_DIGEST_HEX = "dced9a900adeb10cf5126f3cd2a4ab1f43909b13a268efa2128902e0687908de"


def _load_make_golden() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "segwal_make_golden", GOLDEN_DIR / "make_golden.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_golden = _load_make_golden()


def golden(name: str) -> bytes:
    return (GOLDEN_DIR / name).read_bytes()


def u16(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 2], "little")


def u32(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "little")


def u64(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 8], "little")


def recrc_header(data: bytes | bytearray) -> bytes:
    """The header with its CRC recomputed, so that only the field under test is wrong."""
    body = bytes(data[: HEADER_SIZE - 4])
    return body + struct.pack("<I", crc32c(body))


def patch(data: bytes, offset: int, value: bytes) -> bytearray:
    out = bytearray(data)
    out[offset : offset + len(value)] = value
    return out


def reference_crc32c(data: bytes, value: int = 0) -> int:
    """Bit-by-bit CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as in docs/FORMAT.md."""
    crc = value ^ 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


# name, offset, size of every segment header field, in order.
HEADER_FIELDS = [
    ("magic", 0, 8),
    ("version", 8, 2),
    ("flags", 10, 2),
    ("checksum_id", 12, 1),
    ("compression_id", 13, 1),
    ("encryption_id", 14, 1),
    ("reserved", 15, 1),
    ("log_id", 16, 16),
    ("sequence", 32, 8),
    ("first_lsn", 40, 8),
    ("created_us", 48, 8),
    ("max_record_bytes", 56, 4),
    ("header_size", 60, 4),
    ("prev_digest", 64, 32),
    ("reserved2", 96, 28),
    ("crc", 124, 4),
]

SEAL_FIELDS = [
    ("crc", 0, 4),
    ("kind", 4, 1),
    ("flags", 5, 1),
    ("reserved", 6, 2),
    ("seal_size", 8, 4),
    ("reserved2", 12, 4),
    ("first_lsn", 16, 8),
    ("last_lsn", 24, 8),
    ("count", 32, 8),
    ("min_ts", 40, 8),
    ("max_ts", 48, 8),
    ("data_end", 56, 8),
    ("sealed_us", 64, 8),
    ("digest", 72, 32),
    ("reserved3", 104, 24),
]


# --- golden files -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(make_golden.GOLDEN))
def test_encoding_reproduces_golden_file(name: str) -> None:
    assert make_golden.GOLDEN[name]() == golden(name)


def test_golden_sizes() -> None:
    assert len(golden("header_v1.bin")) == 128
    assert len(golden("frame_single_v1.bin")) == 40 + 4 + 13
    assert len(golden("frame_batch_v1.bin")) == 40 + 3 * 4 + 16
    assert len(golden("seal_v1.bin")) == 128
    assert len(golden("segment_sealed_v1.bin")) == 128 + 53 + 45 + 128


def test_struct_sizes() -> None:
    assert HEADER_SIZE == fmt.HEADER.size == 128
    assert FRAME_HEAD_SIZE == FRAME_HEAD.size == 40
    assert SEAL_SIZE == fmt.SEAL.size == 128
    assert fmt.MAGIC == b"\x89SEGWAL\n"
    assert (fmt.KIND_RECORDS, fmt.KIND_SEAL, fmt.FLAG_COMMIT) == (0x52, 0x53, 0x01)
    assert (FRAME_TARGET_BYTES, MAX_FRAME_RECORDS) == (1 << 20, 1 << 16)


def test_field_tables_tile_the_structures() -> None:
    for fields, size in ((HEADER_FIELDS, HEADER_SIZE), (SEAL_FIELDS, SEAL_SIZE)):
        offset = 0
        for _name, start, width in fields:
            assert start == offset
            offset += width
        assert offset == size


# --- segment header -----------------------------------------------------------------------


def test_decode_golden_header() -> None:
    header = decode_header(golden("header_v1.bin"))
    assert header == SegmentHeader(
        version=1,
        flags=0,
        checksum_id=1,
        compression_id=0,
        encryption_id=0,
        log_id=LOG_ID,
        sequence=2,
        first_lsn=1000,
        created_us=T0,
        max_record_bytes=16 * MIB,
        prev_digest=bytes(range(0xA0, 0xC0)),
        seed=0x93782893,
    )


def test_header_offsets_by_hand() -> None:
    data = golden("header_v1.bin")
    assert data[0:8] == b"\x89SEGWAL\n"
    assert u16(data, 8) == 1  # version
    assert u16(data, 10) == 0  # flags
    assert data[12] == 1  # CRC32C
    assert data[13] == 0  # no compression
    assert data[14] == 0  # no encryption
    assert data[15] == 0  # reserved
    assert data[16:32] == LOG_ID
    assert u64(data, 32) == 2  # sequence
    assert u64(data, 40) == 1000  # first LSN
    assert u64(data, 48) == T0  # created_us
    assert u32(data, 56) == 16 * MIB  # max record bytes
    assert u32(data, 60) == 128  # header size
    assert data[64:96] == bytes(range(0xA0, 0xC0))  # previous digest
    assert data[96:124] == bytes(28)  # reserved
    assert u32(data, 124) == crc32c(data[:124]) == 0x93782893
    assert u32(data, 124) == reference_crc32c(data[:124])


def test_decode_header_accepts_memoryview_and_longer_input() -> None:
    data = golden("segment_sealed_v1.bin")
    assert decode_header(memoryview(data)) == decode_header(data[:HEADER_SIZE])


@pytest.mark.parametrize(("field", "offset", "size"), HEADER_FIELDS)
def test_every_header_bit_flip_is_rejected(field: str, offset: int, size: int) -> None:
    data = golden("header_v1.bin")
    for byte in range(offset, offset + size):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[byte] ^= 1 << bit
            with pytest.raises(FormatError) as info:
                decode_header(bytes(damaged))
            # The checksum is checked before the version (every version keeps it at 124), so
            # a bit flip, even one that raises the version, reads as damage, never "newer".
            assert not info.value.newer, field


@pytest.mark.parametrize("version", [3, 0x100, 0xFFFF])
def test_newer_version_is_newer(version: int) -> None:
    data = recrc_header(patch(golden("header_v1.bin"), 8, struct.pack("<H", version)))
    with pytest.raises(FormatError, match="newer") as info:
        decode_header(data)
    assert info.value.newer


def test_newer_version_needs_an_intact_checksum() -> None:
    # Every version keeps the CRC of bytes 0..124 at 124: without it, "newer" is damage.
    data = patch(golden("header_v1.bin"), 8, struct.pack("<H", 3))
    with pytest.raises(FormatError) as info:
        decode_header(bytes(data))
    assert not info.value.newer
    data[100:124] = b"\xaa" * 24  # a newer layout may use the reserved bytes
    data[124:128] = struct.pack("<I", fmt.crc32c(bytes(data[:124])))
    with pytest.raises(FormatError) as info:
        decode_header(bytes(data))
    assert info.value.newer


@pytest.mark.parametrize(
    ("offset", "value", "reason"),
    [
        (10, struct.pack("<H", 1), "unknown header flags 0x1"),
        (10, struct.pack("<H", 0x8000), "unknown header flags 0x8000"),
        (12, b"\x00", "unknown checksum id 0"),
        (12, b"\x02", "unknown checksum id 2"),
        (13, b"\x01", "unknown compression id 1"),
        (13, b"\xff", "unknown compression id 255"),
        (14, b"\x01", "unknown encryption id 1"),
    ],
)
def test_unknown_flags_and_ids_are_newer(offset: int, value: bytes, reason: str) -> None:
    data = recrc_header(patch(golden("header_v1.bin"), offset, value))
    with pytest.raises(FormatError) as info:
        decode_header(data)
    assert info.value.newer
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("offset", "value", "match"),
    [
        (8, struct.pack("<H", 0), "unknown format version 0"),
        (60, struct.pack("<I", 256), "header size 256"),
        (60, struct.pack("<I", 0), "header size 0"),
        (40, struct.pack("<Q", 0), "first LSN 0 is out of range"),
    ],
)
def test_invalid_header_values_are_damage_not_newer(offset: int, value: bytes, match: str) -> None:
    data = recrc_header(patch(golden("header_v1.bin"), offset, value))
    with pytest.raises(FormatError, match=match) as info:
        decode_header(data)
    assert not info.value.newer


def test_checksum_mismatch() -> None:
    data = bytes(patch(golden("header_v1.bin"), 124, b"\x00\x00\x00\x00"))
    with pytest.raises(FormatError, match="header checksum mismatch") as info:
        decode_header(data)
    assert not info.value.newer


@pytest.mark.parametrize(
    "magic", [b"\x89SEGWAL\r", b"SEGWAL\n\x89", bytes(8), b"\x89segwal\n", b"\x89SEGWAM\n"]
)
def test_wrong_magic(magic: bytes) -> None:
    data = recrc_header(patch(golden("header_v1.bin"), 0, magic))
    with pytest.raises(FormatError, match="bad magic") as info:
        decode_header(data)
    assert not info.value.newer


def test_zeros_are_not_a_header() -> None:
    with pytest.raises(FormatError, match="bad magic"):
        decode_header(bytes(HEADER_SIZE))


@pytest.mark.parametrize("length", [0, 1, 8, 10, 64, 124, 127])
def test_short_header(length: int) -> None:
    with pytest.raises(FormatError, match=f"segment is {length} bytes, shorter") as info:
        decode_header(golden("header_v1.bin")[:length])
    assert not info.value.newer


def test_valid_header_with_other_values_decodes_them() -> None:
    # Values that disagree with the file name or the previous segment still decode; the
    # caller compares them. Reserved bytes are not checked beyond the checksum.
    data = bytearray(golden("header_v1.bin"))
    data[32:40] = struct.pack("<Q", 99)
    data[40:48] = struct.pack("<Q", 12345)
    data[15] = 0xFF
    data[96:124] = b"\x01" * 28
    header = decode_header(recrc_header(data))
    assert (header.sequence, header.first_lsn) == (99, 12345)


def test_header_roundtrip_and_seed_depends_on_every_field() -> None:
    base: dict[str, Any] = make_golden.HEADER_ARGS
    seeds = {decode_header(encode_header(**base)).seed}
    variants: list[dict[str, Any]] = [
        {"log_id": bytes(16)},
        {"sequence": 3},
        {"first_lsn": 1001},
        {"created_us": T0 + 1},
        {"max_record_bytes": MIB},
        {"prev_digest": bytes(32)},
    ]
    for change in variants:
        args = {**base, **change}
        header = decode_header(encode_header(**args))
        for key, value in args.items():
            assert getattr(header, key) == value
        seeds.add(header.seed)
    assert len(seeds) == len(variants) + 1


def test_format_error_attributes() -> None:
    err = FormatError("why")
    assert (err.reason, err.newer, str(err)) == ("why", False, "why")
    assert FormatError("why", newer=True).newer


# --- records frames -----------------------------------------------------------------------


def test_frame_single_offsets_by_hand() -> None:
    header = golden("header_v1.bin")
    frame = golden("frame_single_v1.bin")
    seed = decode_header(header).seed
    assert u32(frame, 0) == crc32c(frame[4:], seed)
    # Seeding with the header CRC is the same as one CRC over header[0:124] + frame[4:].
    assert u32(frame, 0) == crc32c(header[:124] + frame[4:])
    assert u32(frame, 0) == reference_crc32c(frame[4:], seed)
    assert frame[4] == 0x52  # kind "R"
    assert frame[5] == 0x01  # COMMIT
    assert u16(frame, 6) == 7  # record type
    assert u32(frame, 8) == 1  # count
    assert u32(frame, 12) == 13  # body bytes
    assert u64(frame, 16) == 1000  # first LSN
    assert u64(frame, 24) == T0 + 1  # timestamp_us
    assert u64(frame, 32) == 999  # durable LSN
    assert u32(frame, 40) == 13  # length of record 0
    assert frame[44:] == b"hello, segwal"


def test_frame_batch_offsets_by_hand() -> None:
    seed = decode_header(golden("header_v1.bin")).seed
    frame = golden("frame_batch_v1.bin")
    assert u32(frame, 0) == crc32c(frame[4:], seed)
    assert (frame[4], frame[5], u16(frame, 6)) == (0x52, 0x01, 0xBEEF)
    assert (u32(frame, 8), u32(frame, 12)) == (3, 16)
    assert (u64(frame, 16), u64(frame, 24), u64(frame, 32)) == (1001, T0 + 2, 1000)
    assert struct.unpack_from("<3I", frame, 40) == (5, 0, 11)
    assert frame[52:] == b"alpha" + b"" + b"gamma-gamma"


def test_encode_record_equals_a_one_record_batch() -> None:
    seed = 0x12345678
    for payload in (b"", b"x", b"hello" * 100):
        single = encode_record(seed, 42, 9, T0, 41, payload)
        batch = encode_frames(
            seed=seed,
            first_lsn=42,
            record_type=9,
            timestamp_us=T0,
            durable_lsn=41,
            payloads=[payload],
            lengths=[len(payload)],
        )
        assert single == batch


def _heads(data: bytes | bytearray) -> list[tuple[int, ...]]:
    """(flags, count, body bytes, first LSN) of each frame, walking lengths by hand."""
    heads: list[tuple[int, ...]] = []
    pos = 0
    while pos < len(data):
        _crc, kind, flags, _rtype, count, body, first, _ts, _dur = FRAME_HEAD.unpack_from(data, pos)
        assert kind == 0x52
        heads.append((flags, count, body, first))
        pos += FRAME_HEAD_SIZE + 4 * count + body
    assert pos == len(data)
    return heads


def _encode(sizes: list[int], first_lsn: int = 1) -> bytearray:
    payloads = [b"\xab" * size for size in sizes]
    return encode_frames(
        seed=7,
        first_lsn=first_lsn,
        record_type=1,
        timestamp_us=T0,
        durable_lsn=0,
        payloads=payloads,
        lengths=sizes,
    )


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        # (flags, count, body bytes, first LSN) per frame
        ([FRAME_TARGET_BYTES // 2] * 2, [(1, 2, FRAME_TARGET_BYTES, 1)]),
        ([FRAME_TARGET_BYTES // 2 + 1] * 2, [(0, 1, MIB // 2 + 1, 1), (1, 1, MIB // 2 + 1, 2)]),
        ([2 * MIB], [(1, 1, 2 * MIB, 1)]),
        ([2 * MIB, 10], [(0, 1, 2 * MIB, 1), (1, 1, 10, 2)]),
        ([10, 2 * MIB, 10], [(0, 1, 10, 1), (0, 1, 2 * MIB, 2), (1, 1, 10, 3)]),
        ([MIB - 10, 10, 1], [(0, 2, MIB, 1), (1, 1, 1, 3)]),
        ([0] * MAX_FRAME_RECORDS, [(1, MAX_FRAME_RECORDS, 0, 1)]),
        ([0] * (MAX_FRAME_RECORDS + 1), [(0, MAX_FRAME_RECORDS, 0, 1), (1, 1, 0, 65537)]),
        (
            [0] * (2 * MAX_FRAME_RECORDS + 3),
            [(0, MAX_FRAME_RECORDS, 0, 1), (0, MAX_FRAME_RECORDS, 0, 65537), (1, 3, 0, 131073)],
        ),
    ],
    ids=[
        "exactly-target",
        "over-target",
        "one-huge-record",
        "huge-then-small",
        "huge-in-middle",
        "fill-to-target",
        "max-records",
        "max-records-plus-one",
        "twice-max-records",
    ],
)
def test_batch_splitting(sizes: list[int], expected: list[tuple[int, ...]]) -> None:
    assert _heads(_encode(sizes)) == expected
    limit = max_frame_bytes(max(sizes))
    assert all(FRAME_HEAD_SIZE + 4 * count + body <= limit for _, count, body, _ in expected)


def test_max_frame_bytes() -> None:
    assert max_frame_bytes(1) == 40 + 4 * 65536 + MIB
    assert max_frame_bytes(MIB) == 40 + 4 * 65536 + MIB
    assert max_frame_bytes(16 * MIB) == 40 + 4 * 65536 + 16 * MIB == 17_039_400


def test_largest_frames_fit_max_frame_bytes() -> None:
    # The largest frame by count (65536 records filling the target) and by one record.
    count = MAX_FRAME_RECORDS
    sizes = [FRAME_TARGET_BYTES // count] * count
    assert _heads(_encode(sizes)) == [(1, count, FRAME_TARGET_BYTES, 1)]
    assert len(_encode(sizes)) == max_frame_bytes(FRAME_TARGET_BYTES)
    assert len(_encode([3 * MIB])) <= max_frame_bytes(3 * MIB)


def test_empty_batch_is_refused() -> None:
    # A count-0 frame would be rejected by the scanner, so the encoder refuses to make one.
    with pytest.raises(ValueError, match="at least one record"):
        _encode([])


# --- seal ---------------------------------------------------------------------------------


def test_decode_golden_seal() -> None:
    seed = decode_header(golden("header_v1.bin")).seed
    assert decode_seal(golden("seal_v1.bin"), seed) == Seal(
        first_lsn=1000,
        last_lsn=1003,
        count=4,
        min_ts=T0 + 1,
        max_ts=T0 + 2,
        data_end=4096,
        sealed_us=T0 + 3,
        digest=bytes(range(0x40, 0x60)),
    )


def test_seal_offsets_by_hand() -> None:
    seed = decode_header(golden("header_v1.bin")).seed
    data = golden("seal_v1.bin")
    assert u32(data, 0) == crc32c(data[4:], seed) == reference_crc32c(data[4:], seed)
    assert (data[4], data[5], u16(data, 6)) == (0x53, 0, 0)
    assert (u32(data, 8), u32(data, 12)) == (128, 0)
    assert (u64(data, 16), u64(data, 24), u64(data, 32)) == (1000, 1003, 4)
    assert (u64(data, 40), u64(data, 48)) == (T0 + 1, T0 + 2)
    assert (u64(data, 56), u64(data, 64)) == (4096, T0 + 3)
    assert data[72:104] == bytes(range(0x40, 0x60))
    assert data[104:128] == bytes(24)


@pytest.mark.parametrize(("field", "offset", "size"), SEAL_FIELDS)
def test_every_seal_bit_flip_is_rejected(field: str, offset: int, size: int) -> None:
    seed = decode_header(golden("header_v1.bin")).seed
    data = golden("seal_v1.bin")
    for byte in range(offset, offset + size):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[byte] ^= 1 << bit
            with pytest.raises(FormatError) as info:
                decode_seal(bytes(damaged), seed)
            assert not info.value.newer, field


def _reseal(data: bytes | bytearray, seed: int) -> bytes:
    return struct.pack("<I", crc32c(bytes(data[4:SEAL_SIZE]), seed)) + bytes(data[4:SEAL_SIZE])


@pytest.mark.parametrize(
    ("offset", "value", "match"),
    [
        (8, struct.pack("<I", 129), "unknown seal layout"),
        (5, b"\x01", "unknown seal layout"),
        (32, struct.pack("<Q", 5), "seal counts 5 records for LSNs 1000..1003"),
        (24, struct.pack("<Q", 999), "seal counts 4 records for LSNs 1000..999"),
    ],
)
def test_invalid_seal_values(offset: int, value: bytes, match: str) -> None:
    seed = decode_header(golden("header_v1.bin")).seed
    data = _reseal(patch(golden("seal_v1.bin"), offset, value), seed)
    with pytest.raises(FormatError, match=match):
        decode_seal(data, seed)


def test_seal_errors() -> None:
    seed = decode_header(golden("header_v1.bin")).seed
    data = golden("seal_v1.bin")
    with pytest.raises(FormatError, match="too short for a seal"):
        decode_seal(data[:127], seed)
    with pytest.raises(FormatError, match="seal checksum mismatch"):
        decode_seal(data, seed ^ 1)
    with pytest.raises(FormatError, match=r"no seal \(kind byte 0x52\)"):
        decode_seal(_reseal(patch(data, 4, b"R"), seed), seed)
    with pytest.raises(FormatError, match=r"no seal \(kind byte 0x00\)"):
        decode_seal(bytes(SEAL_SIZE), seed)


def test_empty_segment_seal_roundtrip() -> None:
    seal = encode_seal(
        seed=5,
        first_lsn=77,
        last_lsn=76,
        count=0,
        min_ts=0,
        max_ts=0,
        data_end=HEADER_SIZE,
        sealed_us=T0,
        digest=blake3.blake3(b"x").digest(),
    )
    decoded = decode_seal(memoryview(seal), 5)
    assert (decoded.first_lsn, decoded.last_lsn, decoded.count) == (77, 76, 0)


# --- a whole sealed segment ---------------------------------------------------------------


def test_golden_segment_by_hand() -> None:
    data = golden("segment_sealed_v1.bin")
    header = decode_header(data)
    assert (header.sequence, header.first_lsn, header.prev_digest) == (0, 1, bytes(32))
    assert header.seed == 0xBBFCB3B0
    # Frame 1: LSNs 1-2, [b"hi", b"wal"], COMMIT.
    assert _heads(data[128:181]) == [(1, 2, 5, 1)]
    assert data[168:176] == struct.pack("<II", 2, 3)
    assert data[176:181] == b"hiwal"
    assert u64(data, 128 + 32) == 0  # durable LSN when written
    # Frame 2: LSN 3, [b"!"], COMMIT, written when LSN 2 was durable.
    assert _heads(data[181:226]) == [(1, 1, 1, 3)]
    assert u64(data, 181 + 32) == 2
    assert data[225:226] == b"!"
    for start, end in ((128, 181), (181, 226)):
        assert u32(data, start) == crc32c(data[start + 4 : end], header.seed)
    # Seal: the last 128 bytes; its digest covers bytes 0..data_end.
    seal = decode_seal(data[226:], header.seed)
    assert seal.data_end == 226 == len(data) - SEAL_SIZE
    assert (seal.first_lsn, seal.last_lsn, seal.count) == (1, 3, 3)
    assert (seal.min_ts, seal.max_ts, seal.sealed_us) == (T0 + 10, T0 + 20, T0 + 30)
    assert seal.digest == blake3.blake3(data[:226]).digest()
    assert seal.digest.hex() == SEGMENT_DIGEST_HEX


def test_digest_chain_into_next_segment() -> None:
    data = golden("segment_sealed_v1.bin")
    seal = decode_seal(data[-SEAL_SIZE:], decode_header(data).seed)
    nxt = encode_header(
        log_id=LOG_ID,
        sequence=1,
        first_lsn=seal.last_lsn + 1,
        created_us=seal.sealed_us,
        max_record_bytes=16 * MIB,
        prev_digest=seal.digest,
    )
    assert nxt[64:96] == seal.digest
    assert decode_header(nxt).prev_digest == blake3.blake3(data[: seal.data_end]).digest()


def test_format_doc_hex_dump_matches_golden_segment() -> None:
    # The worked example in docs/FORMAT.md is an xxd dump; it must be the golden file.
    dumped = bytearray()
    for line in FORMAT_DOC.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([0-9a-f]{8}): ((?:[0-9a-f]{2,4} )+)", line)
        if match:
            assert int(match.group(1), 16) == len(dumped)
            dumped += bytes.fromhex(match.group(2).replace(" ", ""))
    assert bytes(dumped) == golden("segment_sealed_v1.bin")
