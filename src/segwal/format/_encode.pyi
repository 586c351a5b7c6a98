from collections.abc import Callable

HARDWARE_CRC: int

def encode_record(
    seed: int,
    lsn: int,
    record_type: int,
    timestamp_us: int,
    durable_lsn: int,
    payload: bytes | bytearray | memoryview,
    /,
) -> bytes: ...
def crc32c(data: bytes | bytearray | memoryview, seed: int = 0, /) -> int: ...
def crc32c_soft(data: bytes | bytearray | memoryview, /) -> int: ...
def bind(record_error: Callable[..., Exception | None], /) -> None: ...
def write_record(
    fd: int,
    offset: int,
    seed: int,
    lsn: int,
    record_type: int,
    timestamp_us: int,
    durable_lsn: int,
    payload: bytes | bytearray | memoryview,
    /,
) -> int: ...
