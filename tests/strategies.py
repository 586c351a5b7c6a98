"""Shared hypothesis strategies for segwal tests: payloads, record types, LSNs, timestamps."""

from __future__ import annotations

from hypothesis import strategies as st

from segwal.format.layout import FRAME_TARGET_BYTES, MAX_U32, MAX_U64

# Any value a u16 record-type field can hold.
record_types = st.integers(min_value=0, max_value=0xFFFF)

# LSNs start at 1; the upper bound leaves room for a batch's LSNs to stay within a u64.
lsns = st.integers(min_value=1, max_value=2**62)  # LSNs stay below 2**63 (format.MAX_LSN)

# The durable LSN in a frame: 0 before anything is durable.
durable_lsns = st.integers(min_value=0, max_value=MAX_U64)

# Microseconds since the Unix epoch, anywhere in the u64 range.
timestamps = st.integers(min_value=0, max_value=MAX_U64)

# Frame seeds are header CRCs: any u32.
seeds = st.integers(min_value=0, max_value=MAX_U32)

# Small payloads, empty ones included: a batch of them always fits in one frame.
payloads = st.binary(max_size=256)
payload_lists = st.lists(payloads, min_size=1, max_size=24)


def _fill(sizes: list[int]) -> list[bytes]:
    # Each payload is one repeated byte that differs from its neighbours, so a record
    # boundary in the wrong place shows up as a wrong payload.
    return [bytes([(i * 37 + 1) % 256]) * size for i, size in enumerate(sizes)]


# A few payloads of up to 1.5 x FRAME_TARGET_BYTES, so batches often need several frames
# and single records larger than the target get a frame of their own.
large_payload_lists = st.lists(
    st.one_of(
        st.integers(min_value=0, max_value=64),
        st.integers(min_value=FRAME_TARGET_BYTES // 3, max_value=FRAME_TARGET_BYTES * 3 // 2),
        st.sampled_from([FRAME_TARGET_BYTES - 1, FRAME_TARGET_BYTES, FRAME_TARGET_BYTES + 1]),
    ),
    min_size=1,
    max_size=5,
).map(_fill)

# Junk that follows a valid frame: arbitrary bytes, runs of a kind byte, or zeros.
junk = st.one_of(
    st.binary(min_size=1, max_size=300),
    st.integers(min_value=1, max_value=300).map(lambda n: b"R" * n),
    st.integers(min_value=1, max_value=300).map(lambda n: b"S" * n),
    st.integers(min_value=1, max_value=300).map(bytes),
)
