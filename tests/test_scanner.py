"""The scanner, tested three ways as h11 tests its parsers: the whole buffer at once, one
byte at a time, and with trailing junk that must be left alone; then damage, find_valid,
record_spans, and hypothesis round trips through encode_frames.
"""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segwal.format.framing import encode_frames, encode_record, max_frame_bytes
from segwal.format.layout import (
    FRAME_HEAD,
    FRAME_HEAD_SIZE,
    FRAME_TARGET_BYTES,
    HEADER_SIZE,
    MAX_FRAME_RECORDS,
    SEAL_SIZE,
    crc32c,
    decode_header,
    encode_header,
)
from segwal.format.scanner import Frame, Status, Verdict, check, find_valid, record_spans
from strategies import (
    durable_lsns,
    junk,
    large_payload_lists,
    lsns,
    payload_lists,
    record_types,
    seeds,
    timestamps,
)

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
T0 = 1_700_000_000_000_000
MAX_RECORD = 1 << 24
MAX_FRAME = max_frame_bytes(MAX_RECORD)


def golden(name: str) -> bytes:
    return (GOLDEN_DIR / name).read_bytes()


SEED = decode_header(golden("header_v1.bin")).seed
SEGMENT = golden("segment_sealed_v1.bin")
SEGMENT_SEED = decode_header(SEGMENT).seed
SINGLE = golden("frame_single_v1.bin")
BATCH = golden("frame_batch_v1.bin")
SEAL = golden("seal_v1.bin")


def scan(
    buf: bytes | bytearray | memoryview, pos: int, seed: int, max_frame: int = MAX_FRAME
) -> tuple[list[Verdict], Verdict]:
    """Check frames from ``pos`` until something other than a frame; return both."""
    found: list[Verdict] = []
    while True:
        verdict = check(buf, pos, len(buf), seed, max_frame)
        if verdict.status is not Status.FRAME:
            return found, verdict
        assert verdict.frame is not None
        found.append(verdict)
        pos = verdict.frame.end


def records(buf: bytes | bytearray | memoryview, frames: list[Verdict]) -> list[bytes]:
    out = []
    for verdict in frames:
        assert verdict.frame is not None
        out += [bytes(buf[start:end]) for start, end in record_spans(buf, verdict.frame)]
    return out


def make_frame(
    *,
    seed: int = SEED,
    flags: int = 1,
    count: int = 1,
    body_len: int = 3,
    lengths: tuple[int, ...] = (3,),
    body: bytes = b"abc",
) -> bytes:
    """A hand-built frame with a valid checksum over whatever fields it is given."""
    head = FRAME_HEAD.pack(0, 0x52, flags, 1, count, body_len, 10, T0, 9)
    frame = bytearray(head + struct.pack(f"<{len(lengths)}I", *lengths) + body)
    frame[0:4] = struct.pack("<I", crc32c(bytes(frame[4:]), seed))
    return bytes(frame)


# --- whole buffer -------------------------------------------------------------------------


def test_whole_segment() -> None:
    frames, last = scan(SEGMENT, HEADER_SIZE, SEGMENT_SEED)
    assert [v.frame for v in frames] == [
        Frame(128, 53, True, 1, 2, 5, 1, T0 + 10, 0),
        Frame(181, 45, True, 1, 1, 1, 3, T0 + 20, 2),
    ]
    assert records(SEGMENT, frames) == [b"hi", b"wal", b"!"]
    assert last.status is Status.SEAL
    assert last.seal is not None
    assert (last.seal.first_lsn, last.seal.last_lsn, last.seal.data_end) == (1, 3, 226)
    assert check(SEGMENT, len(SEGMENT), len(SEGMENT), SEGMENT_SEED, MAX_FRAME).status is Status.END


def test_whole_frames() -> None:
    verdict = check(SINGLE, 0, len(SINGLE), SEED, MAX_FRAME)
    assert verdict == Verdict(Status.FRAME, frame=Frame(0, 57, True, 7, 1, 13, 1000, T0 + 1, 999))
    assert verdict.frame is not None
    assert (verdict.frame.last_lsn, verdict.frame.end) == (1000, 57)
    verdict = check(BATCH, 0, len(BATCH), SEED, MAX_FRAME)
    assert verdict.frame == Frame(0, 68, True, 0xBEEF, 3, 16, 1001, T0 + 2, 1000)
    assert verdict.frame.last_lsn == 1003
    assert records(BATCH, [verdict]) == [b"alpha", b"", b"gamma-gamma"]


def test_memoryview_and_bytearray_buffers() -> None:
    for buf in (memoryview(SEGMENT), bytearray(SEGMENT)):
        frames, last = scan(buf, HEADER_SIZE, SEGMENT_SEED)
        assert records(buf, frames) == [b"hi", b"wal", b"!"]
        assert last.status is Status.SEAL


def test_check_respects_end_inside_a_larger_buffer() -> None:
    # ``end`` bounds the look, whatever lies beyond it in the buffer.
    buf = SINGLE + BATCH
    verdict = check(buf, 0, len(SINGLE) - 1, SEED, MAX_FRAME)
    assert (verdict.status, verdict.needed) == (Status.SHORT, len(SINGLE))
    assert check(buf, len(SINGLE), len(SINGLE), SEED, MAX_FRAME).status is Status.END
    assert check(buf, 5, 3, SEED, MAX_FRAME).status is Status.END


# --- one byte at a time -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["frame_single_v1.bin", "frame_batch_v1.bin", "seal_v1.bin"])
def test_growing_prefixes_are_short_until_complete(name: str) -> None:
    data = golden(name)
    assert check(data[:0], 0, 0, SEED, MAX_FRAME).status is Status.END
    for k in range(1, len(data)):
        verdict = check(data[:k], 0, k, SEED, MAX_FRAME)
        assert verdict.status is Status.SHORT, (k, verdict)
        assert k < verdict.needed <= len(data)
    assert check(data, 0, len(data), SEED, MAX_FRAME).status in (Status.FRAME, Status.SEAL)


def test_needed_tells_how_much_to_read() -> None:
    assert check(BATCH[:4], 0, 4, SEED, MAX_FRAME).needed == FRAME_HEAD_SIZE
    assert check(BATCH[:39], 0, 39, SEED, MAX_FRAME).needed == FRAME_HEAD_SIZE
    assert check(BATCH[:40], 0, 40, SEED, MAX_FRAME).needed == len(BATCH)
    assert check(SEAL[:5], 0, 5, SEED, MAX_FRAME).needed == SEAL_SIZE


def test_segment_fed_one_byte_at_a_time() -> None:
    whole, _ = scan(SEGMENT, HEADER_SIZE, SEGMENT_SEED)
    seen: list[Verdict] = []
    pos = HEADER_SIZE
    sealed = False
    for k in range(HEADER_SIZE, len(SEGMENT) + 1):
        buf = SEGMENT[:k]
        while True:
            verdict = check(buf, pos, k, SEGMENT_SEED, MAX_FRAME)
            assert verdict.status is not Status.BAD, (k, verdict)
            if verdict.status is Status.FRAME:
                assert verdict.frame is not None
                seen.append(verdict)
                pos = verdict.frame.end
                continue
            if verdict.status is Status.SEAL:
                sealed = True
                assert k == len(SEGMENT)
            break
    assert seen == whole
    assert sealed


# --- trailing junk ------------------------------------------------------------------------


@settings(max_examples=200)
@given(junk=junk, which=st.sampled_from(["single", "batch"]))
def test_trailing_junk_is_left_alone(junk: bytes, which: str) -> None:
    frame = SINGLE if which == "single" else BATCH
    alone = check(frame, 0, len(frame), SEED, MAX_FRAME)
    buf = frame + junk
    assert check(buf, 0, len(buf), SEED, MAX_FRAME) == alone
    assert alone.frame is not None
    after = check(buf, alone.frame.end, len(buf), SEED, MAX_FRAME)
    assert after.status in (Status.BAD, Status.SHORT)


def test_trailing_junk_examples() -> None:
    for tail in (b"\x00", bytes(100), b"\xff" * 100, SINGLE[:-1], SEAL[:100], b"junkRjunk"):
        buf = BATCH + tail
        verdict = check(buf, 0, len(buf), SEED, MAX_FRAME)
        assert verdict.frame == Frame(0, 68, True, 0xBEEF, 3, 16, 1001, T0 + 2, 1000)
        assert check(buf, 68, len(buf), SEED, MAX_FRAME).status in (Status.BAD, Status.SHORT)


def test_a_complete_frame_after_a_frame_is_not_junk() -> None:
    frames, last = scan(SINGLE + BATCH + SEAL, 0, SEED)
    assert [v.frame.first_lsn for v in frames if v.frame] == [1000, 1001]
    assert last.status is Status.SEAL


# --- damage -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [5, 39, 40, 100, 4096])
def test_zeros_are_bad(size: int) -> None:
    verdict = check(bytes(size), 0, size, SEED, MAX_FRAME)
    assert verdict.status is Status.BAD
    assert verdict.reason == "no frame (kind byte 0x00)"


@pytest.mark.parametrize("size", [1, 4])
def test_fewer_than_five_bytes_are_short(size: int) -> None:
    assert check(bytes(size), 0, size, SEED, MAX_FRAME).status is Status.SHORT


@pytest.mark.parametrize(
    ("count", "body_len"), [(0xFFFFFFFF, 0), (1, 0xFFFFFFFF), (2**32 - 1,) * 2]
)
def test_huge_length_is_bad_without_allocating(count: int, body_len: int) -> None:
    head = FRAME_HEAD.pack(0, 0x52, 1, 0, count, body_len, 1, 0, 0)
    buf = head + bytes(64)
    tracemalloc.start()
    try:
        verdict = check(buf, 0, len(buf), SEED, MAX_FRAME)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert verdict.status is Status.BAD
    assert "exceeds the maximum" in verdict.reason
    assert peak < 64 * 1024


def test_frame_longer_than_max_frame_is_bad_even_if_present() -> None:
    verdict = check(BATCH, 0, len(BATCH), SEED, len(BATCH) - 1)
    assert verdict.status is Status.BAD
    assert verdict.reason == f"frame length 68 exceeds the maximum {len(BATCH) - 1}"
    assert check(BATCH, 0, len(BATCH), SEED, len(BATCH)).status is Status.FRAME


def test_count_zero_is_bad() -> None:
    frame = make_frame(count=0, body_len=0, lengths=(), body=b"")
    verdict = check(frame, 0, len(frame), SEED, MAX_FRAME)
    assert (verdict.status, verdict.reason) == (Status.BAD, "frame with no record")


@pytest.mark.parametrize("flags", [0x02, 0x03, 0x80, 0xFF])
def test_unknown_frame_flags_are_bad(flags: int) -> None:
    frame = make_frame(flags=flags)
    verdict = check(frame, 0, len(frame), SEED, MAX_FRAME)
    assert verdict.status is Status.BAD
    assert verdict.reason == f"unknown frame flags {flags:#04x}"


def test_frame_without_commit_is_a_frame() -> None:
    frame = make_frame(flags=0)
    verdict = check(frame, 0, len(frame), SEED, MAX_FRAME)
    assert verdict.frame is not None
    assert not verdict.frame.commit


def test_lengths_that_disagree_with_body_are_bad() -> None:
    frame = make_frame(count=2, body_len=3, lengths=(1, 1), body=b"abc")
    verdict = check(frame, 0, len(frame), SEED, MAX_FRAME)
    assert verdict.status is Status.BAD
    assert verdict.reason == "record lengths disagree with the frame's body size"


@pytest.mark.parametrize("kind", [0x00, 0x51, 0x54, 0xFF])
def test_unknown_kind_is_bad(kind: int) -> None:
    buf = bytearray(SINGLE)
    buf[4] = kind
    verdict = check(buf, 0, len(buf), SEED, MAX_FRAME)
    assert (verdict.status, verdict.reason) == (Status.BAD, f"no frame (kind byte {kind:#04x})")


def test_checksum_mismatch_is_bad() -> None:
    buf = bytearray(SINGLE)
    buf[-1] ^= 0x20
    verdict = check(buf, 0, len(buf), SEED, MAX_FRAME)
    assert (verdict.status, verdict.reason) == (Status.BAD, "frame checksum mismatch")


def test_another_segments_seed_is_bad() -> None:
    other = encode_header(
        log_id=bytes(16),
        sequence=3,
        first_lsn=1004,
        created_us=T0,
        max_record_bytes=MAX_RECORD,
        prev_digest=bytes(32),
    )
    other_seed = decode_header(other).seed
    assert other_seed != SEED
    for data in (SINGLE, BATCH, SEAL):
        verdict = check(data, 0, len(data), other_seed, MAX_FRAME)
        assert verdict.status is Status.BAD
        assert "checksum mismatch" in verdict.reason


def test_damaged_seal_is_bad_and_short_seal_is_short() -> None:
    buf = bytearray(SEAL)
    buf[20] ^= 1
    verdict = check(buf, 0, len(buf), SEED, MAX_FRAME)
    assert (verdict.status, verdict.reason) == (Status.BAD, "seal checksum mismatch")
    verdict = check(SEAL[:127], 0, 127, SEED, MAX_FRAME)
    assert (verdict.status, verdict.reason) == (Status.SHORT, "incomplete seal")


@pytest.mark.parametrize("name", ["frame_single_v1.bin", "frame_batch_v1.bin"])
def test_no_single_bit_flip_yields_a_valid_frame(name: str) -> None:
    data = golden(name)
    for byte in range(len(data)):
        for bit in range(8):
            for tail in (b"", SINGLE):  # at the end of the buffer, and followed by a frame
                buf = bytearray(data + tail)
                buf[byte] ^= 1 << bit
                verdict = check(buf, 0, len(buf), SEED, MAX_FRAME)
                assert verdict.status in (Status.BAD, Status.SHORT), (byte, bit, verdict)


# --- find_valid ---------------------------------------------------------------------------


def test_find_valid_after_garbage() -> None:
    garbage = b"\x00R\x01SRRSS\xffR" + bytes(50) + b"R" * 20
    buf = garbage + BATCH + bytes(10)
    verdict = find_valid(buf, 0, len(buf), len(buf), SEED, MAX_FRAME)
    assert verdict is not None
    assert verdict.frame == Frame(len(garbage), 68, True, 0xBEEF, 3, 16, 1001, T0 + 2, 1000)
    assert verdict.offset == len(garbage)


def test_find_valid_finds_a_seal() -> None:
    buf = b"S" * 30 + SEAL
    verdict = find_valid(buf, 0, len(buf), len(buf), SEED, MAX_FRAME)
    assert verdict is not None
    assert verdict.status is Status.SEAL
    assert verdict.offset == 30


def test_find_valid_on_memoryview() -> None:
    buf = memoryview(bytes(300) + SINGLE)
    verdict = find_valid(buf, 1, len(buf), len(buf), SEED, MAX_FRAME)
    assert verdict is not None
    assert verdict.frame is not None
    assert verdict.frame.offset == 300


@pytest.mark.parametrize("size", [0, 10, 4096, 1 << 20])
def test_find_valid_on_zeros_is_none(size: int) -> None:
    assert find_valid(bytes(size), 0, size, size, SEED, MAX_FRAME) is None


def test_find_valid_bounds() -> None:
    buf = bytes(20) + SINGLE + bytes(20)
    # The frame starts at 20: [0, 20) excludes it, [0, 21) includes it.
    assert find_valid(buf, 0, 20, len(buf), SEED, MAX_FRAME) is None
    assert find_valid(buf, 0, 21, len(buf), SEED, MAX_FRAME) is not None
    # Starting after it excludes it.
    assert find_valid(buf, 21, len(buf), len(buf), SEED, MAX_FRAME) is None
    # A frame that would end past ``end`` does not count.
    assert find_valid(buf, 0, len(buf), 20 + len(SINGLE) - 1, SEED, MAX_FRAME) is None
    assert find_valid(buf, 0, len(buf), 20 + len(SINGLE), SEED, MAX_FRAME) is not None
    # Wrong seed: nothing is valid.
    assert find_valid(buf, 0, len(buf), len(buf), SEED ^ 1, MAX_FRAME) is None


def test_find_valid_skips_damaged_frame_to_the_next() -> None:
    damaged = bytearray(BATCH)
    damaged[50] ^= 0xFF
    buf = bytes(damaged) + SINGLE
    verdict = find_valid(buf, 0, len(buf), len(buf), SEED, MAX_FRAME)
    assert verdict is not None
    assert verdict.frame is not None
    assert verdict.frame.offset == len(BATCH)


# --- record_spans -------------------------------------------------------------------------


def test_record_spans_exact() -> None:
    buf = bytes(7) + BATCH
    verdict = check(buf, 7, len(buf), SEED, MAX_FRAME)
    assert verdict.frame is not None
    spans = record_spans(buf, verdict.frame)
    assert spans == [(59, 64), (64, 64), (64, 75)]
    assert [buf[s:e] for s, e in spans] == [b"alpha", b"", b"gamma-gamma"]
    assert spans[-1][1] == verdict.frame.end


# --- round trips through encode_frames ----------------------------------------------------


def _expected_split(lengths: list[int]) -> list[list[int]]:
    """Greedy model: a frame closes before a record that would pass a limit."""
    frames: list[list[int]] = []
    size = 0
    for length in lengths:
        if frames and size + length <= FRAME_TARGET_BYTES and len(frames[-1]) < MAX_FRAME_RECORDS:
            frames[-1].append(length)
            size += length
        else:
            frames.append([length])
            size = length
    return frames


def _check_batch(
    data: bytes | bytearray,
    payloads: list[bytes],
    *,
    seed: int,
    first_lsn: int,
    record_type: int,
    timestamp_us: int,
    durable_lsn: int,
) -> list[Frame]:
    frames, last = scan(data, 0, seed)
    assert last.status is Status.END
    assert records(data, frames) == payloads
    got = [v.frame for v in frames if v.frame is not None]
    assert [f.count for f in got] == [len(f) for f in _expected_split([len(p) for p in payloads])]
    assert [f.commit for f in got] == [False] * (len(got) - 1) + [True]
    lsn = first_lsn
    for frame in got:
        assert frame.first_lsn == lsn
        assert (frame.record_type, frame.timestamp_us) == (record_type, timestamp_us)
        assert frame.durable_lsn == durable_lsn
        assert frame.count <= MAX_FRAME_RECORDS
        assert frame.body_len <= FRAME_TARGET_BYTES or frame.count == 1
        lsn = frame.last_lsn + 1
    assert lsn == first_lsn + len(payloads)
    return got


@given(
    payloads=payload_lists,
    seed=seeds,
    first_lsn=lsns,
    record_type=record_types,
    timestamp_us=timestamps,
    durable_lsn=durable_lsns,
)
def test_roundtrip_small_batches(
    payloads: list[bytes],
    seed: int,
    first_lsn: int,
    record_type: int,
    timestamp_us: int,
    durable_lsn: int,
) -> None:
    args = {
        "seed": seed,
        "first_lsn": first_lsn,
        "record_type": record_type,
        "timestamp_us": timestamp_us,
        "durable_lsn": durable_lsn,
    }
    data = encode_frames(payloads=payloads, lengths=[len(p) for p in payloads], **args)
    got = _check_batch(data, payloads, **args)
    assert len(got) == 1
    if len(payloads) == 1:
        assert (
            encode_record(seed, first_lsn, record_type, timestamp_us, durable_lsn, payloads[0])
            == data
        )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads=large_payload_lists, seed=seeds, first_lsn=lsns)
def test_roundtrip_large_batches_split(payloads: list[bytes], seed: int, first_lsn: int) -> None:
    args = {
        "seed": seed,
        "first_lsn": first_lsn,
        "record_type": 3,
        "timestamp_us": T0,
        "durable_lsn": first_lsn - 1,
    }
    data = encode_frames(payloads=payloads, lengths=[len(p) for p in payloads], **args)
    got = _check_batch(data, payloads, **args)
    assert all(f.length <= max_frame_bytes(max(len(p) for p in payloads)) for f in got)


@settings(max_examples=5, deadline=None)
@given(extra=st.integers(min_value=0, max_value=3), seed=seeds)
def test_roundtrip_many_empty_records_split(extra: int, seed: int) -> None:
    payloads = [b""] * (MAX_FRAME_RECORDS - 1 + extra)
    args = {"seed": seed, "first_lsn": 1, "record_type": 0, "timestamp_us": 0, "durable_lsn": 0}
    data = encode_frames(payloads=payloads, lengths=[0] * len(payloads), **args)
    got = _check_batch(data, payloads, **args)
    assert len(got) == (1 if len(payloads) <= MAX_FRAME_RECORDS else 2)


@settings(max_examples=50)
@given(batches=st.lists(payload_lists, min_size=1, max_size=6), seed=seeds)
def test_consecutive_batches_scan_back(batches: list[list[bytes]], seed: int) -> None:
    data = bytearray()
    lsn = 1
    for i, batch in enumerate(batches):
        data += encode_frames(
            seed=seed,
            first_lsn=lsn,
            record_type=i,
            timestamp_us=T0 + i,
            durable_lsn=lsn - 1,
            payloads=batch,
            lengths=[len(p) for p in batch],
        )
        lsn += len(batch)
    frames, last = scan(data, 0, seed)
    assert last.status is Status.END
    assert records(data, frames) == [p for batch in batches for p in batch]
    assert [v.frame.record_type for v in frames if v.frame] == list(range(len(batches)))
    # A torn tail (any proper prefix of the last frame) is SHORT, never BAD.
    assert frames[-1].frame is not None
    start = frames[-1].frame.offset
    for cut in range(start + 1, len(data)):
        assert check(data, start, cut, seed, MAX_FRAME).status is Status.SHORT
