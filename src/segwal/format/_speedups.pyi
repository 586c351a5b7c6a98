# The compiled twin of segwal.format.records (_speedups.c); see that module for the contract.
from array import array

from segwal.types import Record

_Buffer = bytes | bytearray | memoryview

def bind(record: type[Record], format_error: type[Exception], max_lsn: int, /) -> None: ...
def length_total(buf: _Buffer, table: int, count: int, /) -> int: ...
def payload_offsets(buf: _Buffer, table: int, count: int, end: int, /) -> bytes: ...
def decode_payloads(
    buf: _Buffer, table: int, count: int, end: int, skip: int, stop: int, /
) -> list[bytes]: ...
def record_spans(buf: _Buffer, table: int, count: int, end: int, /) -> list[tuple[int, int]]: ...
def decode_records(
    buf: _Buffer,
    table: int,
    count: int,
    end: int,
    first_lsn: int,
    record_type: int,
    timestamp_us: int,
    skip: int = 0,
    stop: int | None = None,
) -> list[Record]: ...
def cached_record(
    firsts: array[int], words: array[int], blobs: list[bytes], used: bytearray, lsn: int, /
) -> Record | None: ...
