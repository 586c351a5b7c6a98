"""One record's frame, the per-append work of a single append, pure or compiled.

``framing.encode_record`` is the reference; ``segwal.format._encode`` (C, optional, built by
setup.py like ``_speedups``) has the same function: the same bytes, and on bad input the
exception the reference's ``record_error`` names (the C code calls it to build its errors).
``tests/test_encode.py`` holds the two together on random and bad input.

The compiled one is used when it was built, unless ``SEGWAL_PURE_PYTHON`` (or
``SEGWAL_PURE``) asked for pure Python when ``segwal.format.records`` was imported, the one
switch for every compiled part; ``IMPLEMENTATION`` says which ("c" or "python").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Protocol

from segwal.format.framing import encode_record as encode_record_py
from segwal.format.framing import record_error
from segwal.format.records import PURE_REQUESTED

if TYPE_CHECKING:
    from segwal.format import _encode

Payload = bytes | bytearray | memoryview


class EncodeRecord(Protocol):
    def __call__(
        self,
        seed: int,
        lsn: int,
        record_type: int,
        timestamp_us: int,
        durable_lsn: int,
        payload: Payload,
        /,
    ) -> bytes | bytearray: ...


class WriteRecord(Protocol):
    def __call__(
        self,
        fd: int,
        offset: int,
        seed: int,
        lsn: int,
        record_type: int,
        timestamp_us: int,
        durable_lsn: int,
        payload: Payload,
        /,
    ) -> int: ...


def _compiled() -> (
    tuple[EncodeRecord, WriteRecord, type[_encode.FastAppender], type[_encode.DurableWait]] | None
):
    try:
        from segwal.format import _encode
    except ImportError:
        return None
    _encode.bind(record_error)
    return _encode.encode_record, _encode.write_record, _encode.FastAppender, _encode.DurableWait


_COMPILED: Final = _compiled()
encode_record_c: Final = _COMPILED[0] if _COMPILED is not None else None
IMPLEMENTATION: Final = "c" if _COMPILED is not None and not PURE_REQUESTED else "python"
encode_record: EncodeRecord = (
    encode_record_c if encode_record_c is not None and IMPLEMENTATION == "c" else encode_record_py
)
# encode_record's frame written with one pwrite (the GIL released): a single append's write
# to a real file, the fast path's. None on the pure path, which encodes, then writes.
write_record: Final = _COMPILED[1] if _COMPILED is not None and IMPLEMENTATION == "c" else None
# The single-append fast path in one C call (format/_appender.c, used by log/appender.py):
# None on the pure path, whose Appender.append is the reference.
FastAppender: Final = _COMPILED[2] if _COMPILED is not None and IMPLEMENTATION == "c" else None
# Its durable wait with sync="always" (format/_durable.c, built by log/fastpath.py): the
# group commit's solo barrier and its bookkeeping in C.
DurableWait: Final = _COMPILED[3] if _COMPILED is not None and IMPLEMENTATION == "c" else None

__all__ = [
    "IMPLEMENTATION",
    "DurableWait",
    "FastAppender",
    "encode_record",
    "encode_record_c",
    "encode_record_py",
    "write_record",
]
