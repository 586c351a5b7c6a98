"""Format version 2 at the byte level: headers, opaque frames (compressed, encrypted), and
the bounds that keep bad input from costing memory.

Frames are built by ``format.frames.FrameEncoder``, checked by ``format.scanner.check`` and
decoded by ``format.frames.plain_body`` then the records decoder, as the read path does.
"""

from __future__ import annotations

import importlib.util
import os
import struct
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cipherkeys import CounterKeys
from segwal.format import codecs
from segwal.format.cipher import CIPHER_AES_256_GCM, AuthenticationFailed, SegmentKey
from segwal.format.features import (
    FRAME_COMPRESSED,
    FRAME_ENCRYPTED,
    HEADER_COMPRESSED,
    HEADER_ENCRYPTED,
    PLAIN_SIZE,
)
from segwal.format.frames import FrameEncoder, plain_body
from segwal.format.framing import encode_frames, max_frame_bytes
from segwal.format.layout import (
    FRAME_HEAD,
    FormatError,
    SegmentHeader,
    crc32c,
    decode_header,
    encode_header,
)
from segwal.format.records import decode_records
from segwal.format.scanner import Frame, Status, check, crc_ok

LOG_ID = bytes(range(16))
T0 = 1_700_000_000_000_000
MAX_RECORD = 1 << 20


def header(
    compression: int = 0, key: SegmentKey | None = None, first_lsn: int = 1
) -> SegmentHeader:
    return decode_header(
        encode_header(
            log_id=LOG_ID,
            sequence=0,
            first_lsn=first_lsn,
            created_us=T0,
            max_record_bytes=MAX_RECORD,
            prev_digest=bytes(32),
            compression_id=compression,
            encryption_id=key.cipher_id if key else 0,
            key_id=key.key_id if key else 0,
            salt=key.salt if key else bytes(16),
        )
    )


def new_key(keys: CounterKeys | None = None) -> SegmentKey:
    return (keys or CounterKeys()).for_new_segment(LOG_ID, 0, 1)


def decode_all(buf: bytes, head: SegmentHeader, key: SegmentKey | None) -> list[bytes]:
    """Every payload of the frames in ``buf``, checked as a reader checks them."""
    limit = max_frame_bytes(head.max_record_bytes)
    out: list[bytes] = []
    pos = 0
    while pos < len(buf):
        verdict = check(buf, pos, len(buf), head.seed, limit, head.flags)
        assert verdict.status is Status.FRAME, verdict.reason
        frame = verdict.frame
        assert frame is not None
        body, table, end = plain_body(buf, frame, head, key)
        records = decode_records(body, table, frame.count, end, frame.first_lsn, 0, 0)
        out += [r.payload for r in records]
        pos = frame.end
    return out


def json_like(i: int, size: int) -> bytes:
    text = b'{"id": %d, "user": "user-%d", "kind": "click", "tags": ["a", "b"], "pad": "' % (
        i,
        i % 97,
    )
    return (text + b"x" * size)[: size - 2] + b'"}' if size > 2 else text[:size]


# -- round trips ------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    codec=st.sampled_from([0, codecs.NAMES["zstd"], codecs.NAMES["lz4"]]),
    encrypted=st.booleans(),
    size=st.sampled_from([0, 1, 100, 1024, 5000]),
    count=st.integers(1, 80),
    random_data=st.booleans(),
)
def test_round_trip(codec: int, encrypted: bool, size: int, count: int, random_data: bool) -> None:
    key = new_key() if encrypted else None
    head = header(codec, key)
    packer = codecs.compressor(codecs.IDS[codec]) if codec else None
    payloads = [os.urandom(size) if random_data else json_like(i, size) for i in range(count)]
    encoder = FrameEncoder(head, packer, key)
    buf = bytes(
        encoder.encode(
            first_lsn=1,
            record_type=3,
            timestamp_us=T0,
            durable_lsn=0,
            payloads=payloads,
            lengths=[len(p) for p in payloads],
        )
    )
    assert decode_all(buf, head, key) == payloads
    flags = buf[5]
    assert bool(flags & FRAME_ENCRYPTED) == encrypted
    if random_data and size >= 100:
        assert not flags & FRAME_COMPRESSED  # incompressible: stored raw, no flag


def test_compressible_frames_shrink_and_random_ones_are_stored_raw() -> None:
    head = header(codecs.NAMES["zstd"])
    encoder = FrameEncoder(head, codecs.compressor("zstd"), None)
    text = [json_like(i, 1024) for i in range(64)]
    packed = encoder.encode(
        first_lsn=1,
        record_type=0,
        timestamp_us=T0,
        durable_lsn=0,
        payloads=text,
        lengths=[1024] * 64,
    )
    assert packed[5] & FRAME_COMPRESSED and len(packed) * 3 < 64 * 1024
    noise = [os.urandom(1024) for _ in range(64)]
    raw = encoder.encode(
        first_lsn=1,
        record_type=0,
        timestamp_us=T0,
        durable_lsn=0,
        payloads=noise,
        lengths=[1024] * 64,
    )
    assert raw[5] == 1 and len(raw) == 40 + 4 * 64 + 64 * 1024  # a version 1 frame


# -- headers ------------------------------------------------------------------------------


def test_a_v2_header_names_its_features_and_key() -> None:
    key = new_key()
    head = header(codecs.NAMES["lz4"], key)
    assert head.version == 2
    assert head.flags == HEADER_COMPRESSED | HEADER_ENCRYPTED
    assert (head.compression_id, head.encryption_id) == (2, CIPHER_AES_256_GCM)
    assert (head.key_id, head.salt, head.dict_id) == (key.key_id, key.salt, 0)
    assert header().version == 1  # no feature: writers keep writing version 1


def _recrc(raw: bytes) -> bytes:
    return raw[:124] + struct.pack("<I", crc32c(raw[:124]))


@pytest.mark.parametrize(
    ("offset", "value", "newer"),
    [
        (10, struct.pack("<H", 0x0004), True),  # a reserved feature bit (clean close)
        (13, b"\x07", True),  # an unknown codec
        (14, b"\x09", True),  # an unknown cipher
        (13, b"\x00", False),  # compression flag without its id: damage
    ],
)
def test_v2_header_checks(offset: int, value: bytes, newer: bool) -> None:
    raw = encode_header(
        log_id=LOG_ID,
        sequence=0,
        first_lsn=1,
        created_us=T0,
        max_record_bytes=MAX_RECORD,
        prev_digest=bytes(32),
        compression_id=1,
    )
    bad = _recrc(raw[:offset] + value + raw[offset + len(value) :])
    with pytest.raises(FormatError) as info:
        decode_header(bad)
    assert info.value.newer is newer


def _released_v1() -> ModuleType:
    path = Path(__file__).parent / "golden" / "layout_v1_released.py"
    spec = importlib.util.spec_from_file_location("layout_v1_released", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("features", ["zstd", "lz4", "encrypted", "both"])
def test_the_released_v1_reader_refuses_a_v2_segment_as_newer(features: str) -> None:
    v1 = _released_v1()
    key = new_key() if features in ("encrypted", "both") else None
    codec = 0 if features == "encrypted" else codecs.NAMES.get(features, 1)
    raw = header(codec, key).raw
    with pytest.raises(v1.FormatError, match="newer") as info:
        v1.decode_header(raw)
    assert info.value.newer  # storage turns this into UnsupportedFormatError


# -- bounds: lying sizes and bombs --------------------------------------------------------


def _opaque_frame(
    head: SegmentHeader, count: int, plain_size: int, stored: bytes, flags: int
) -> bytes:
    body = PLAIN_SIZE.size + len(stored)
    frame = bytearray(FRAME_HEAD.pack(0, 0x52, 1 | flags, 0, count, body, 1, T0, 0))
    frame += PLAIN_SIZE.pack(plain_size) + stored
    struct.pack_into("<I", frame, 0, crc32c(memoryview(frame)[4:], head.seed))
    return bytes(frame)


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_a_decompression_bomb_is_refused_before_allocation(codec: str) -> None:
    head = header(codecs.NAMES[codec])
    limit = max_frame_bytes(head.max_record_bytes)
    # 1 GiB of zeros claims a plain size past the frame limit: refused by the scanner.
    bomb = codecs.compressor(codec).compress(bytes(64 << 20))
    frame = _opaque_frame(head, 1, 1 << 30, bomb, FRAME_COMPRESSED)
    verdict = check(frame, 0, len(frame), head.seed, limit, head.flags)
    assert verdict.status is Status.BAD and "plain size" in verdict.reason
    # Within the limit but lying: the 64 MiB stream stops after the stated size.
    small = _opaque_frame(head, 1, 4096, bomb, FRAME_COMPRESSED)
    verdict = check(small, 0, len(small), head.seed, limit, head.flags)
    assert verdict.status is Status.FRAME and verdict.frame is not None
    with pytest.raises(FormatError, match="compressed body"):
        plain_body(small, verdict.frame, head, None)


def test_a_lying_plain_size_is_corruption() -> None:
    head = header(codecs.NAMES["zstd"])
    plain = struct.pack("<I", 300) + b"a" * 300
    packed = codecs.compressor("zstd").compress(plain)
    for size in (len(plain) + 1, len(plain) - 1):
        frame = _opaque_frame(head, 1, size, packed, FRAME_COMPRESSED)
        verdict = check(frame, 0, len(frame), head.seed, 1 << 24, head.flags)
        assert verdict.frame is not None
        with pytest.raises(FormatError):
            plain_body(frame, verdict.frame, head, None)
    frame = _opaque_frame(head, 1, 2, packed, FRAME_COMPRESSED)  # below the lengths table
    assert check(frame, 0, len(frame), head.seed, 1 << 24, head.flags).status is Status.BAD


def test_frame_flags_must_match_the_header() -> None:
    plain_head = header()
    frame = _opaque_frame(plain_head, 1, 8, b"x" * 8, FRAME_COMPRESSED)
    verdict = check(frame, 0, len(frame), plain_head.seed, 1 << 24, plain_head.flags)
    assert verdict.status is Status.BAD and "flags" in verdict.reason
    key = new_key()
    enc_head = header(0, key)
    v1_frame = FrameEncoder(header(1), None, None).encode(
        first_lsn=1, record_type=0, timestamp_us=T0, durable_lsn=0, payloads=[b"x"], lengths=[1]
    )
    verdict = check(v1_frame, 0, len(v1_frame), enc_head.seed, 1 << 24, enc_head.flags)
    assert verdict.status is Status.BAD  # other seed, and a plain frame in an encrypted segment


# -- authentication ----------------------------------------------------------------------


def _encrypted(head: SegmentHeader, key: SegmentKey, first_lsn: int = 1) -> bytearray:
    return FrameEncoder(head, None, key).encode(
        first_lsn=first_lsn,
        record_type=9,
        timestamp_us=T0,
        durable_lsn=0,
        payloads=[b"secret one", b"secret two"],
        lengths=[10, 10],
    )


def _recrc_frame(frame: bytearray, seed: int) -> Frame:
    struct.pack_into("<I", frame, 0, crc32c(memoryview(frame)[4:], seed))
    verdict = check(frame, 0, len(frame), seed, 1 << 24, HEADER_ENCRYPTED)
    assert verdict.frame is not None, verdict.reason
    return verdict.frame


@pytest.mark.parametrize(
    ("offset", "field"),
    [(6, "record type"), (16, "first LSN"), (24, "timestamp"), (44, "nonce"), (70, "ciphertext")],
)
def test_a_changed_byte_with_a_valid_crc_does_not_authenticate(offset: int, field: str) -> None:
    key = new_key()
    head = header(0, key)
    frame = _encrypted(head, key)
    frame[offset] ^= 0x01
    parsed = _recrc_frame(frame, head.seed)
    with pytest.raises(AuthenticationFailed):
        plain_body(frame, parsed, head, key)


def test_a_frame_moved_to_another_segment_does_not_authenticate() -> None:
    keys = CounterKeys()
    key = keys.for_new_segment(LOG_ID, 0, 1)
    head = header(0, key)
    other = header(0, key, first_lsn=1)  # same key and salt; the header differs in its time
    other = decode_header(
        encode_header(
            log_id=LOG_ID,
            sequence=0,
            first_lsn=1,
            created_us=T0 + 1,
            max_record_bytes=MAX_RECORD,
            prev_digest=bytes(32),
            encryption_id=key.cipher_id,
            key_id=key.key_id,
            salt=key.salt,
        )
    )
    frame = _encrypted(head, key)
    parsed = _recrc_frame(frame, other.seed)  # an attacker can recompute a CRC
    with pytest.raises(AuthenticationFailed):
        plain_body(frame, parsed, other, key)
    assert plain_body(_encrypted(head, key), parsed, head, key)  # the untouched frame reads


# -- golden files ---------------------------------------------------------------------------

GOLDEN_DIR = Path(__file__).parent / "golden"


def _make_golden() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "segwal_make_golden_v2", GOLDEN_DIR / "make_golden.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_golden_v2_header_by_hand() -> None:
    raw = (GOLDEN_DIR / "header_v2.bin").read_bytes()
    assert struct.unpack_from("<HHBBB", raw, 8) == (2, 0x0003, 1, 2, 1)
    assert struct.unpack_from("<I", raw, 96) == (7,)
    assert raw[100:116] == bytes(range(0x10, 0x20))
    assert raw[116:124] == bytes(8)
    head = decode_header(raw)
    assert (head.version, head.key_id, head.compression_id, head.encryption_id) == (2, 7, 2, 1)


@pytest.mark.parametrize(
    ("name", "compressed"),
    [("frame_encrypted_v2.bin", False), ("frame_compressed_encrypted_v2.bin", True)],
)
def test_golden_v2_frames_decode(name: str, compressed: bool) -> None:
    golden = _make_golden()
    head = decode_header((GOLDEN_DIR / "header_v2.bin").read_bytes())
    raw = (GOLDEN_DIR / name).read_bytes()
    flags = raw[5]
    assert flags & FRAME_ENCRYPTED and bool(flags & FRAME_COMPRESSED) == compressed
    plain = 4 * 3 + sum(len(p) for p in golden.V2_PAYLOADS)
    assert struct.unpack_from("<IQ", raw, 8)[0] == 3
    assert struct.unpack_from("<I", raw, 40) == (plain,)
    assert raw[44:56] == golden.V2_NONCE
    assert struct.unpack_from("<I", raw, 12) == (len(raw) - 40,)
    assert decode_all(raw, head, golden._v2_key()) == golden.V2_PAYLOADS


# -- guards the tests above do not reach (tests/test_coverage.py wants every branch) -------


def test_encode_header_refuses_unknown_ids() -> None:
    with pytest.raises(ValueError, match="unknown compression 9"):
        encode_header(
            log_id=LOG_ID, sequence=0, first_lsn=1, created_us=T0, max_record_bytes=MAX_RECORD,
            prev_digest=bytes(32), compression_id=9,
        )  # fmt: skip


def test_an_opaque_frame_too_short_for_its_nonce_and_tag_is_damage() -> None:
    key = new_key()
    head = header(0, key)
    frame = bytearray(FRAME_HEAD.pack(0, 0x52, 1 | FRAME_ENCRYPTED, 0, 1, 20, 1, T0, 0))
    frame += bytes(20)
    struct.pack_into("<I", frame, 0, crc32c(memoryview(frame)[4:], head.seed))
    verdict = check(frame, 0, len(frame), head.seed, 1 << 24, head.flags)
    assert verdict.status is Status.BAD and "too short" in verdict.reason


def test_an_uncompressed_opaque_frame_must_store_its_plain_size() -> None:
    key = new_key()
    head = header(0, key)
    frame = _encrypted(head, key)
    struct.pack_into("<I", frame, 40, struct.unpack_from("<I", frame, 40)[0] + 1)
    struct.pack_into("<I", frame, 0, crc32c(memoryview(frame)[4:], head.seed))
    verdict = check(frame, 0, len(frame), head.seed, 1 << 24, head.flags)
    assert verdict.status is Status.BAD and "plain size says" in verdict.reason


# -- reading with the key: the CRC left to the tag, the decrypt buffer reused ---------------


def test_check_defers_the_crc_of_encrypted_frames_only() -> None:
    key = new_key()
    head = header(0, key)
    frame = _encrypted(head, key)
    deferred = check(frame, 0, len(frame), head.seed, 1 << 24, head.flags, defer_crc=True)
    assert deferred.frame is not None and deferred.frame.crc_deferred
    assert crc_ok(frame, deferred.frame, head.seed)
    frame[70] ^= 0x01  # a ciphertext byte, the CRC left stale
    still = check(frame, 0, len(frame), head.seed, 1 << 24, head.flags, defer_crc=True)
    assert still.frame is not None and not crc_ok(frame, still.frame, head.seed)
    checked = check(frame, 0, len(frame), head.seed, 1 << 24, head.flags)
    assert checked.status is Status.BAD and checked.reason == "frame checksum mismatch"
    plain_head = header()
    v1 = encode_frames(
        seed=plain_head.seed,
        first_lsn=1,
        record_type=0,
        timestamp_us=T0,
        durable_lsn=0,
        payloads=[b"open"],
        lengths=[4],
    )
    ok = check(v1, 0, len(v1), plain_head.seed, 1 << 24, plain_head.flags, defer_crc=True)
    assert ok.frame is not None and not ok.frame.crc_deferred
    assert crc_ok(v1, ok.frame, plain_head.seed)  # nothing deferred: nothing to compute
    v1[45] ^= 0x01
    bad = check(v1, 0, len(v1), plain_head.seed, 1 << 24, plain_head.flags, defer_crc=True)
    assert bad.status is Status.BAD and bad.reason == "frame checksum mismatch"


@pytest.mark.parametrize("forged", [False, True])
def test_a_deferred_crc_decides_the_reason_of_a_refused_plain_size(forged: bool) -> None:
    """Damage a deferred check refuses before decryption is named as a CRC checked first
    names it: a checksum mismatch, unless the CRC was forged to match."""
    key = new_key()
    head = header(0, key)
    frame = _encrypted(head, key)
    frame[40] ^= 0x01  # the plain size no longer matches the stored bytes
    if forged:
        struct.pack_into("<I", frame, 0, crc32c(memoryview(frame)[4:], head.seed))
    verdict = check(frame, 0, len(frame), head.seed, 1 << 24, head.flags, defer_crc=True)
    assert verdict.status is Status.BAD
    if forged:
        assert verdict.reason.startswith("uncompressed frame stores")
    else:
        assert verdict.reason == "frame checksum mismatch"


@pytest.mark.parametrize("compression", [0, codecs.COMPRESSION_LZ4])
def test_an_encrypted_body_decrypts_into_the_reused_buffer(compression: int) -> None:
    key = new_key()
    head = header(compression, key)
    packer = codecs.compressor("lz4") if compression else None
    payloads = [b"%05d repeated text repeated text " % i * 4 for i in range(40)]
    frame = FrameEncoder(head, packer, key).encode(
        first_lsn=1,
        record_type=0,
        timestamp_us=T0,
        durable_lsn=0,
        payloads=payloads,
        lengths=[len(p) for p in payloads],
    )
    verdict = check(frame, 0, len(frame), head.seed, 1 << 24, head.flags, defer_crc=True)
    parsed = verdict.frame
    assert parsed is not None and bool(parsed.opaque & FRAME_COMPRESSED) == bool(compression)
    scratch = memoryview(bytearray(len(frame)))
    body, table, end = plain_body(frame, parsed, head, key, None, scratch)
    if compression:
        assert not isinstance(body, memoryview)  # decompressed into a buffer of its own
    else:
        assert isinstance(body, memoryview) and body.obj is scratch.obj
    assert [r.payload for r in decode_records(body, table, 40, end, 1, 0, T0)] == payloads
    small = memoryview(bytearray(8))  # too small: a buffer of its own, as without one
    other, table, end = plain_body(frame, parsed, head, key, None, small)
    assert not (isinstance(other, memoryview) and other.obj is small.obj)
    assert [r.payload for r in decode_records(other, table, 40, end, 1, 0, T0)] == payloads


def test_a_dictionary_id_must_be_a_u32_of_a_zstd_segment() -> None:
    common: dict[str, object] = dict(
        log_id=LOG_ID, sequence=0, first_lsn=1, created_us=T0, max_record_bytes=MAX_RECORD,
        prev_digest=bytes(32),
    )  # fmt: skip
    with pytest.raises(ValueError, match="not a u32"):
        encode_header(**common, compression_id=1, dict_id=1 << 32)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs zstd"):
        encode_header(**common, compression_id=0, dict_id=7)  # type: ignore[arg-type]
