"""A batch of several frames whose payloads' len() disagrees with their bytes, one over and
one under in two frames, is refused by encode_frames (found by review when the frames were
first joined in one buffer), not written as frames whose CRCs cover the wrong bytes; so
are lengths that are not the payloads' sizes."""

from __future__ import annotations

import array
from typing import Any

import pytest

import segwal
from segwal.format.framing import encode_frames
from segwal.format.layout import FRAME_TARGET_BYTES


class _LongLen(bytes):
    """A bytes subclass whose len() is 3 more than its bytes."""

    def __len__(self) -> int:
        return bytes.__len__(self) + 3


def _batch() -> list[bytes | memoryview]:
    # Three frames: a 4-byte memoryview of len 1, a full frame, 6 bytes of len 9.
    wide = memoryview(array.array("I", [0x41424344]))
    return [wide, b"x" * FRAME_TARGET_BYTES, _LongLen(b"abcdef")]


def _encode(payloads: list[Any], lengths: list[int]) -> bytearray:
    return encode_frames(
        seed=1,
        first_lsn=1,
        record_type=0,
        timestamp_us=0,
        durable_lsn=0,
        payloads=payloads,
        lengths=lengths,
    )


def test_encode_frames_refuses_lengths_that_cancel_across_frames() -> None:
    payloads = _batch()
    with pytest.raises(ValueError, match="payload lengths disagree"):
        _encode(payloads, [len(p) for p in payloads])


def test_acknowledged_batch_reads_back(tmp_path: object) -> None:
    path = str(tmp_path)
    with segwal.open(path) as wal:
        wal.append_batch(_batch())
        wal.sync()
    with segwal.open(path) as wal:
        got = [bytes(r.payload) for r in wal.replay()]
    assert got == [b"DCBA", b"x" * FRAME_TARGET_BYTES, b"abcdef"]


def test_encode_frames_refuses_lengths_that_are_not_the_payloads_sizes() -> None:
    """The caller's lengths disagreeing with exact bytes payloads, in a batch of several
    frames: the joined total gives it away."""
    payloads = [b"y" * FRAME_TARGET_BYTES, b"abc", b"z" * 10]
    lengths = [len(p) for p in payloads]
    lengths[1] += 1
    with pytest.raises(ValueError, match="payload lengths disagree"):
        _encode(payloads, lengths)


def test_a_batch_of_several_frames_takes_any_bytes_like_payload() -> None:
    """memoryview and bytearray payloads of the right size encode as their bytes would."""
    as_bytes = [b"y" * FRAME_TARGET_BYTES, b"abc", b"z" * 10]
    mixed: list[bytes | bytearray | memoryview] = [
        memoryview(as_bytes[0]),
        bytearray(as_bytes[1]),
        memoryview(array.array("B", as_bytes[2])),
    ]
    encoded = [_encode(payloads, [len(p) for p in as_bytes]) for payloads in (as_bytes, mixed)]
    assert encoded[0] == encoded[1]
