"""length_total, the frame check's sum of a length table: compiled and pure agree.

``scanner.check`` adds up a frame's u32 record lengths on every read of the frame; the C
twin (``_speedups.length_total``) must give the same sum, and refuse the same tables (not
inside the buffer) with the same exception type, as ``records.length_total_py``.
"""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import segwal
from segwal.format import records

COMPILED = records.length_total_c


def require_compiled() -> None:
    if COMPILED is None:
        assert os.environ.get("CI") != "true", "CI=true: the compiled length_total is missing"
        pytest.skip("segwal.format._speedups is not built (no C compiler?)")


def outcome(function: object, buf: object, table: int, count: int) -> object:
    try:
        return function(buf, table, count)  # type: ignore[operator]
    except ValueError as exc:
        return ValueError, str(exc)


@settings(max_examples=400, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 2**32 - 1), max_size=40),
    before=st.integers(0, 9),
    after=st.integers(0, 9),
    table_shift=st.integers(-12, 12),
    count_shift=st.integers(-3, 3),
    kind=st.sampled_from([bytes, bytearray, memoryview]),
)
def test_compiled_and_pure_agree(
    lengths: list[int], before: int, after: int, table_shift: int, count_shift: int, kind: type
) -> None:
    require_compiled()
    raw = bytes(before) + struct.pack(f"<{len(lengths)}I", *lengths) + bytes(after)
    buf = kind(raw)
    table, count = before + table_shift, len(lengths) + count_shift
    pure = outcome(records.length_total_py, buf, table, count)
    assert outcome(COMPILED, buf, table, count) == pure
    if table_shift == 0 and count_shift == 0:
        assert pure == sum(lengths)


@pytest.mark.parametrize(
    ("table", "count"), [(-1, 1), (0, -1), (2**62, 1), (0, 2**62), (4, 2), (9, 0)]
)
def test_tables_outside_the_buffer_are_refused_alike(table: int, count: int) -> None:
    require_compiled()
    buf = bytes(8)
    with pytest.raises(ValueError):
        records.length_total_py(buf, table, count)
    with pytest.raises(ValueError):
        COMPILED(buf, table, count)  # type: ignore[misc]


def test_the_frame_check_uses_the_selected_implementation() -> None:
    expected = COMPILED if segwal.DECODER == "c" and COMPILED is not None else None
    if expected is None:
        assert records.length_total is records.length_total_py
    else:
        assert records.length_total is expected
