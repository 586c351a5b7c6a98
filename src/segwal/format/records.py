"""The records of one frame: where each payload lies, and the ``Record`` tuples they make.

This is the per-record work of every read, so it exists twice: the pure functions here are
the reference, and ``segwal.format._speedups`` (C, optional) has the same functions, checks
and errors. ``tests/test_speedups.py`` holds the two to each other on random, fuzzed and
lying inputs. The compiled one is used when it was built, unless the environment variable
``SEGWAL_PURE_PYTHON`` (or ``SEGWAL_PURE``) was set, to anything but "" or "0", when this
module was first imported; ``IMPLEMENTATION`` says which ("c" or "python").

- ``record_spans``: the ``(start, end)`` of each payload.
- ``decode_records``: records ``skip..stop-1`` as a list of ``segwal.types.Record``.
- ``stream_records``: what the read path calls: ``decode_records`` in C; in pure Python
  the same checks, then a lazy iterator (a pure list costs the collector too much).
- ``payload_offsets``: the ``count + 1`` offsets where payloads start (and the last ends),
  as native unsigned 64-bit words: the frame cache's O(1) point read.
- ``decode_payloads``: payloads ``skip..stop-1`` as a list of ``bytes`` (``replay_frames``).

A frame's records are described by its length table: ``count`` u32 lengths at
``buf[table:]``, then the payloads, back to back, ending exactly at ``end`` (the frame's
end). Both functions check, before they slice anything, that ``end`` lies in the buffer,
that the table lies before ``end``, that the lengths add up to the bytes between the table
and ``end``, and that the frame's LSNs stay in range; a lie raises ``FormatError``, never
reads out of bounds. A bad argument (negative, or ``skip``/``stop`` outside ``0..count``)
raises ``ValueError``. The scanner has checked a frame's CRC and lengths already when these
run on the read path; they check again because they must be safe on any bytes.
"""

from __future__ import annotations

import os
import struct
from array import array
from collections.abc import Iterable, Iterator
from functools import partial
from itertools import accumulate, pairwise, repeat
from operator import index
from typing import Final, Protocol

from segwal.format.layout import MAX_LSN, FormatError
from segwal.types import Record

Buffer = bytes | bytearray | memoryview

_new_record = partial(tuple.__new__, Record)


class RecordSpans(Protocol):
    def __call__(
        self, buf: Buffer, table: int, count: int, end: int, /
    ) -> list[tuple[int, int]]: ...


class DecodeRecords(Protocol):
    def __call__(
        self,
        buf: Buffer,
        table: int,
        count: int,
        end: int,
        first_lsn: int,
        record_type: int,
        timestamp_us: int,
        skip: int = 0,
        stop: int | None = None,
    ) -> list[Record]: ...


class StreamRecords(Protocol):
    def __call__(
        self,
        buf: Buffer,
        table: int,
        count: int,
        end: int,
        first_lsn: int,
        record_type: int,
        timestamp_us: int,
        skip: int = 0,
        stop: int | None = None,
    ) -> Iterable[Record]: ...


def _check_args(table: int, count: int, end: int, first_lsn: int, skip: int, stop: int) -> None:
    if table < 0 or count < 0 or end < 0 or first_lsn < 0:
        raise ValueError(
            f"negative frame offset, count or LSN (table {table}, count {count}, end {end}, "
            f"first LSN {first_lsn})"
        )
    if not 0 <= skip <= stop <= count:
        raise ValueError(f"records {skip}..{stop} are not within the frame's {count}")


def _view(buf: Buffer) -> tuple[Buffer, int, bool]:
    """The buffer to slice, its size in bytes, and whether its slices need a copy to bytes."""
    if buf.__class__ is bytes:
        return buf, len(buf), False
    view = memoryview(buf)
    if not view.c_contiguous:
        raise BufferError("the frame buffer must be C-contiguous")
    view = view.cast("B")
    return view, len(view), True


def _lengths(
    buf: Buffer, size: int, table: int, count: int, end: int, first_lsn: int
) -> tuple[int, ...]:
    """The checked length table: every bound of the docstring above, in its order."""
    if end > size:
        raise FormatError(f"frame end {end} is past the buffer of {size} bytes")
    if table > end or count > (end - table) // 4:
        raise FormatError(f"length table of {count} records runs past the frame end {end}")
    if count and first_lsn > MAX_LSN - count + 1:
        raise FormatError(f"frame LSNs from {first_lsn} are out of range")
    lengths: tuple[int, ...] = struct.unpack_from(f"<{count}I", buf, table)
    if sum(lengths) != end - table - 4 * count:
        raise FormatError("record lengths disagree with the frame's body size")
    return lengths


def record_spans_py(buf: Buffer, table: int, count: int, end: int) -> list[tuple[int, int]]:
    """The ``(start, end)`` offsets in ``buf`` of each payload of a frame (pure reference)."""
    table, count, end = index(table), index(count), index(end)
    _check_args(table, count, end, 0, 0, 0)
    data, size, _ = _view(buf)
    lengths = _lengths(data, size, table, count, end, 0)
    ends = list(accumulate(lengths, initial=table + 4 * count))
    return list(pairwise(ends))


def decode_records_py(
    buf: Buffer,
    table: int,
    count: int,
    end: int,
    first_lsn: int,
    record_type: int,
    timestamp_us: int,
    skip: int = 0,
    stop: int | None = None,
) -> list[Record]:
    """Records ``skip..stop-1`` of a frame as ``Record`` tuples (pure reference).

    Record ``i`` has LSN ``first_lsn + i`` and the frame's type and timestamp (the objects
    passed, shared by every record); its payload is always ``bytes``, whatever kind of
    buffer it came from.
    """
    return list(
        stream_records_py(buf, table, count, end, first_lsn, record_type, timestamp_us, skip, stop)
    )


def stream_records_py(
    buf: Buffer,
    table: int,
    count: int,
    end: int,
    first_lsn: int,
    record_type: int,
    timestamp_us: int,
    skip: int = 0,
    stop: int | None = None,
) -> Iterator[Record]:
    """``decode_records_py``, checked now and built lazily, one record per ``next``.

    The pure read path streams: a frame's records all alive at once in a list make the
    garbage collector walk them again and again (the C twin leaves them out of its lists).
    """
    table, count, end, first_lsn = index(table), index(count), index(end), index(first_lsn)
    skip = index(skip)
    stop = count if stop is None else index(stop)
    _check_args(table, count, end, first_lsn, skip, stop)
    data, size, copy = _view(buf)
    lengths = _lengths(data, size, table, count, end, first_lsn)
    ends = list(accumulate(lengths, initial=table + 4 * count))
    payloads = map(data.__getitem__, map(slice, ends[skip:stop], ends[skip + 1 : stop + 1]))
    if copy:
        payloads = map(bytes, payloads)
    return map(
        _new_record,
        zip(
            range(first_lsn + skip, first_lsn + stop),
            repeat(record_type),
            repeat(timestamp_us),
            payloads,
        ),
    )


def payload_offsets_py(buf: Buffer, table: int, count: int, end: int) -> bytes:
    """The ``count + 1`` payload offsets of a frame as native u64 words (pure reference)."""
    table, count, end = index(table), index(count), index(end)
    _check_args(table, count, end, 0, 0, 0)
    data, size, _ = _view(buf)
    lengths = _lengths(data, size, table, count, end, 0)
    return array("Q", accumulate(lengths, initial=table + 4 * count)).tobytes()


def decode_payloads_py(
    buf: Buffer, table: int, count: int, end: int, skip: int, stop: int
) -> list[bytes]:
    """Payloads ``skip..stop-1`` of a frame, each its own ``bytes`` (pure reference)."""
    table, count, end, skip, stop = index(table), index(count), index(end), index(skip), index(stop)
    _check_args(table, count, end, 0, skip, stop)
    data, size, _ = _view(buf)
    lengths = _lengths(data, size, table, count, end, 0)
    ends = list(accumulate(lengths, initial=table + 4 * count))
    payloads = map(data.__getitem__, map(slice, ends[skip:stop], ends[skip + 1 : stop + 1]))
    return list(map(bytes, payloads))  # bytes of a bytes slice is the slice itself


class PayloadOffsets(Protocol):
    def __call__(self, buf: Buffer, table: int, count: int, end: int, /) -> bytes: ...


class DecodePayloads(Protocol):
    def __call__(
        self, buf: Buffer, table: int, count: int, end: int, skip: int, stop: int, /
    ) -> list[bytes]: ...


def _compiled() -> tuple[RecordSpans, DecodeRecords] | None:
    """The compiled functions, bound to ``Record`` and ``FormatError``; None if not built."""
    try:
        from segwal.format import _speedups
    except ImportError:
        return None
    _speedups.bind(Record, FormatError, MAX_LSN)
    return _speedups.record_spans, _speedups.decode_records


# SEGWAL_PURE_PYTHON (the name the docs use) or SEGWAL_PURE: anything but "" or "0".
PURE_REQUESTED: Final = any(
    os.environ.get(name, "") not in ("", "0") for name in ("SEGWAL_PURE_PYTHON", "SEGWAL_PURE")
)
_COMPILED: Final = _compiled()

IMPLEMENTATION: Final = "c" if _COMPILED is not None and not PURE_REQUESTED else "python"
record_spans: RecordSpans
decode_records: DecodeRecords
stream_records: StreamRecords  # for the read path: the C list, or the pure lazy map
if _COMPILED is not None and IMPLEMENTATION == "c":
    record_spans, decode_records = _COMPILED
    stream_records = decode_records
else:
    record_spans, decode_records = record_spans_py, decode_records_py
    stream_records = stream_records_py

# The compiled functions even when the pure path is chosen, for the tests that compare them.
record_spans_c: Final = _COMPILED[0] if _COMPILED is not None else None
decode_records_c: Final = _COMPILED[1] if _COMPILED is not None else None


def length_total_py(buf: Buffer, table: int, count: int) -> int:
    """The sum of the ``count`` u32 lengths at ``table`` in ``buf``: what the frame check
    (``scanner.check``) compares with the frame's body size."""
    table, count = index(table), index(count)
    size = memoryview(buf).nbytes
    if table < 0 or count < 0 or table > size or count > (size - table) // 4:
        raise ValueError("length table is not inside the buffer")
    return int(sum(struct.unpack_from(f"<{count}I", buf, table)))


def _length_total_c() -> LengthTotal | None:
    if _COMPILED is None:
        return None
    from segwal.format import _speedups

    # None from a module built before the function existed: the pure one serves.
    found: LengthTotal | None = getattr(_speedups, "length_total", None)
    return found


class LengthTotal(Protocol):
    def __call__(self, buf: Buffer, table: int, count: int, /) -> int: ...


length_total_c: Final = _length_total_c()
length_total: LengthTotal = (
    length_total_c if length_total_c is not None and IMPLEMENTATION == "c" else length_total_py
)


class CachedRecord(Protocol):
    def __call__(
        self,
        firsts: array[int],
        words: array[int],
        blobs: list[bytes],
        used: bytearray,
        lsn: int,
        /,
    ) -> Record | None: ...


def _compiled_extra() -> tuple[PayloadOffsets | None, DecodePayloads | None, CachedRecord | None]:
    if _COMPILED is None:
        return None, None, None
    from segwal.format import _speedups

    # None from a module built before the functions existed: the pure ones serve.
    return (
        getattr(_speedups, "payload_offsets", None),
        getattr(_speedups, "decode_payloads", None),
        getattr(_speedups, "cached_record", None),
    )


payload_offsets_c, decode_payloads_c, cached_record_c = _compiled_extra()
# The frame cache's hit path in C (its pure reference is FrameCache's own); None: pure.
cached_record: CachedRecord | None = cached_record_c if IMPLEMENTATION == "c" else None
payload_offsets: PayloadOffsets = (
    payload_offsets_c
    if payload_offsets_c is not None and IMPLEMENTATION == "c"
    else payload_offsets_py
)
decode_payloads: DecodePayloads = (
    decode_payloads_c
    if decode_payloads_c is not None and IMPLEMENTATION == "c"
    else decode_payloads_py
)
