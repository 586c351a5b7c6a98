from collections.abc import Callable
from typing import Any

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

class DurableWait:
    """A durable single append's wait for its barrier (``_durable.c``; see log/fastpath.py)."""

    def __init__(
        self,
        state_dict: dict[str, Any],
        file_types: tuple[type, ...],
        bind: Callable[[Any], tuple[dict[str, Any], dict[str, Any], dict[str, Any], Any]],
        bounds: tuple[float, ...],
        slow_seconds: float,
        /,
    ) -> None: ...
    def __call__(self, lsn: int, /) -> None: ...

class FastAppender:
    """The single-append fast path of one log (``_appender.c``; see log/appender.py)."""

    last_ts: int
    @property
    def writer(self) -> Any: ...
    def __init__(
        self,
        state: object,
        state_dict: dict[str, object] | None,
        acquire: Callable[[], object],
        release: Callable[[], object],
        slow: Callable[..., int],
        failed: Callable[[Any, BaseException, bool], None],
        durable: Callable[[int], object] | None,
        clock: Callable[[], int] | None,
        max_type: int,
        max_lsn: int,
        /,
    ) -> None: ...
    def append(self, payload: bytes | bytearray | memoryview, type: int = 0) -> int: ...
    def arm(
        self,
        writer: object,
        writer_dict: dict[str, object] | None,
        index: object,
        commit: object,
        commit_dict: dict[str, object] | None,
        fd: int,
        pwrite: Callable[[bytes, int], object] | None,
        seed: int,
        first_lsn: int,
        room: int,
        max_payload: int,
        exact_index: bool,
        direct: object | None,
        /,
    ) -> None: ...
    def disarm(self) -> None: ...
    def tally(self) -> tuple[int, int]: ...
