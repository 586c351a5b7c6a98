"""The one-record frame encoder: the compiled ``segwal.format._encode`` against its pure
reference ``framing.encode_record``, and the selection in ``segwal.format.encoder``.

Both must give the same bytes for every valid input and refuse the same bad inputs with the
same exception (the C code builds its errors with the reference's ``record_error``; these
tests check that it refuses exactly when the reference does). The frames they give must
also scan as valid frames, so a shared mistake in both would still fail here.

Under ``CI=true`` a missing compiled module fails instead of skipping.
"""

from __future__ import annotations

import array
import gc
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from typing import Any

import crc32c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segwal.format import encoder, records
from segwal.format.framing import encode_frames, encode_record, record_error
from segwal.format.layout import FRAME_HEAD, FRAME_HEAD_SIZE, MAX_LSN, MAX_U32, MAX_U64
from segwal.format.scanner import Status, check
from strategies import durable_lsns, record_types, seeds, timestamps

IN_CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")
BUILT = encoder.encode_record_c is not None

needs_c = pytest.mark.skipif(
    not BUILT and not IN_CI, reason="segwal.format._encode is not built (no C compiler?)"
)

EncodeFn = Callable[..., bytes | bytearray]


def c_encode() -> EncodeFn:
    if encoder.encode_record_c is None:
        pytest.fail("segwal.format._encode is not built, and CI=true needs it")
    return encoder.encode_record_c


def c_module() -> Any:
    c_encode()
    from segwal.format import _encode

    return _encode


def outcome(fn: EncodeFn, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", bytes(fn(*args))
    except Exception as exc:
        return type(exc).__name__, str(exc)


lsns_any = st.integers(min_value=0, max_value=MAX_U64)
payload_bytes = st.binary(max_size=3000)


# --- the build and the selection ------------------------------------------------------------


def test_compiled_module_is_built_under_ci() -> None:
    if not IN_CI:
        if not BUILT:
            pytest.skip("segwal.format._encode is not built (no C compiler?)")
        return
    assert BUILT, "CI=true: segwal.format._encode must be built (pip install -e . with gcc)"
    assert ("python" if records.PURE_REQUESTED else "c") == encoder.IMPLEMENTATION


def test_the_selected_encoder_is_the_one_named() -> None:
    if encoder.IMPLEMENTATION == "c":
        assert encoder.encode_record is encoder.encode_record_c
    else:
        assert encoder.encode_record is encode_record


def _implementation_in_child(pure: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("SEGWAL_PURE", "SEGWAL_PURE_PYTHON")}
    if pure is not None:
        env["SEGWAL_PURE_PYTHON"] = pure
    code = (
        "from segwal.format import encoder, framing; from segwal.log import appender; "
        "assert appender.encode_record is encoder.encode_record; "
        "assert (encoder.encode_record is framing.encode_record) == "
        "(encoder.IMPLEMENTATION == 'python'); "
        "print(encoder.IMPLEMENTATION)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return proc.stdout.strip()


def test_segwal_pure_python_forces_the_pure_encoder() -> None:
    assert _implementation_in_child("1") == "python"


@needs_c
def test_compiled_encoder_by_default() -> None:
    c_encode()
    assert _implementation_in_child(None) == "c"


def test_version_names_both_implementations() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "segwal", "--version"], capture_output=True, text=True, check=True
    )
    assert f"encoder: {encoder.IMPLEMENTATION}" in proc.stdout, proc.stdout


# --- same bytes ------------------------------------------------------------------------------


@needs_c
@settings(max_examples=400, deadline=None)
@given(seeds, lsns_any, record_types, timestamps, durable_lsns, payload_bytes)
def test_same_bytes_as_the_reference(
    seed: int, lsn: int, rtype: int, ts: int, durable: int, payload: bytes
) -> None:
    want = encode_record(seed, lsn, rtype, ts, durable, payload)
    assert c_encode()(seed, lsn, rtype, ts, durable, payload) == want
    # The reference is the one-record case of the batch encoder, which the golden files pin.
    assert want == encode_frames(
        seed=seed,
        first_lsn=lsn,
        record_type=rtype,
        timestamp_us=ts,
        durable_lsn=durable,
        payloads=[payload],
        lengths=[len(payload)],
    )
    # And a frame the scanner takes as whole (with an LSN a log can have), whose CRC is
    # crc32c's.
    if lsn <= MAX_LSN:
        assert check(want, 0, len(want), seed, len(want)).status is Status.FRAME
    assert int.from_bytes(want[:4], "little") == crc32c.crc32c(want[4:], seed)


@needs_c
@settings(max_examples=100, deadline=None)
@given(seeds, payload_bytes, st.sampled_from(["bytearray", "memoryview", "array", "slice"]))
def test_any_contiguous_buffer_is_taken_as_its_bytes(seed: int, payload: bytes, kind: str) -> None:
    buf: Any
    if kind == "bytearray":
        buf, raw = bytearray(payload), payload
    elif kind == "memoryview":
        buf, raw = memoryview(payload), payload
    elif kind == "array":  # items wider than a byte: its bytes, not its length in items
        whole = payload[: len(payload) // 4 * 4]
        buf, raw = array.array("I", whole), whole
    else:
        buf, raw = memoryview(b"ab" + payload + b"c")[2:-1], payload
    want = encode_record(seed, 9, 1, 2, 3, raw)
    assert bytes(encode_record(seed, 9, 1, 2, 3, buf)) == want
    assert c_encode()(seed, 9, 1, 2, 3, buf) == want
    assert FRAME_HEAD.unpack_from(want)[5] == len(raw)


@needs_c
@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 15, 16, 63, 64, 100, 1024, 4099, 65536])
def test_crc_of_every_length_and_alignment(size: int) -> None:
    """Hardware and software CRC32C agree with the crc32c package around every 8-byte
    boundary (the hardware loop aligns first) and every offset into the buffer."""
    module = c_module()
    data = bytes((i * 7 + 3) % 256 for i in range(size + 8))
    for start in range(8):
        chunk = memoryview(data)[start : start + size]
        assert module.crc32c(chunk, 0x1234ABCD) == crc32c.crc32c(bytes(chunk), 0x1234ABCD)
        assert module.crc32c_soft(chunk) == crc32c.crc32c(bytes(chunk))
        frame = c_encode()(0xFFFFFFFF, 1, 2, 3, 4, chunk)
        assert frame == encode_record(0xFFFFFFFF, 1, 2, 3, 4, bytes(chunk))


# --- same errors -----------------------------------------------------------------------------

good = (5, 1, 0, 1, 0, b"x")
bad_ints = st.one_of(
    st.integers(min_value=-(2**70), max_value=-1),
    st.integers(min_value=2**64, max_value=2**70),
    st.sampled_from([1.0, "1", None, b"1", 2**16, 2**32, MAX_U64 + 1]),
)
bad_payloads = st.sampled_from(
    [
        "text",
        None,
        12,
        [b"a"],
        memoryview(b"abcdef")[::2],  # not contiguous
        memoryview(bytes(8)).cast("B", (2, 4)),
        array.array("d", [1.5, 2.5]),
        bytearray(b"ok"),
    ]
)


@needs_c
@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=5), bad_ints, bad_payloads, st.booleans())
def test_same_errors_for_bad_arguments(
    position: int, value: object, payload: object, bad_payload: bool
) -> None:
    args = list(good)
    if position < 5:
        args[position] = value
    if bad_payload or position == 5:
        args[5] = payload
    py, c = outcome(encode_record, *args), outcome(c_encode(), *args)
    assert py == c, (args, py, c)
    expected = record_error(*args)
    if expected is None:
        assert py[0] == "ok"
    else:
        assert py == (type(expected).__name__, str(expected))


def test_record_error_names_the_field() -> None:
    assert str(record_error(5, 1, 2**16, 1, 0, b"")) == "record type 65536 is out of range 0..65535"
    assert str(record_error(-1, 1, 0, 1, 0, b"")) == f"seed -1 is out of range 0..{MAX_U32}"
    err = record_error(5, 1.5, 0, 1, 0, b"")
    assert isinstance(err, TypeError) and str(err) == "LSN must be an integer, not float"
    assert record_error(*good) is None
    # bool and __index__ are integers to struct.pack, so to both encoders.
    assert bytes(encode_record(True, 1, 0, 1, 0, b"")) == bytes(encode_record(1, 1, 0, 1, 0, b""))


@needs_c
def test_wrong_number_of_arguments() -> None:
    with pytest.raises(TypeError):
        c_encode()(1, 2, 3)


# --- leaks -----------------------------------------------------------------------------------


def _traced_growth(fn: Callable[[], object], rounds: int) -> int:
    for _ in range(1000):
        fn()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(rounds):
            fn()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


@needs_c
def test_no_leak_over_100k_encodes() -> None:
    encode = c_encode()
    buf = bytearray(b"payload" * 20)
    lsn, stamp = 2**40 + 1, 2**63 + 5  # objects of their own, to count references to
    refs = (sys.getrefcount(buf), sys.getrefcount(lsn), sys.getrefcount(stamp))

    def ok() -> object:
        return encode(7, lsn, 3, stamp, 0, buf)

    def bad_int() -> object:
        try:
            encode(7, lsn, 3, stamp, -1, buf)
        except ValueError:
            return None
        raise AssertionError("no ValueError")

    def bad_payload() -> object:
        try:
            encode(7, lsn, 3, stamp, 0, memoryview(buf)[::2])
        except BufferError:
            return None
        raise AssertionError("no BufferError")

    for fn in (ok, bad_int, bad_payload):
        growth = _traced_growth(fn, 100_000)
        assert growth < 64 << 10, f"{fn.__name__}: {growth} bytes left after 100k calls"
    assert (sys.getrefcount(buf), sys.getrefcount(lsn), sys.getrefcount(stamp)) == refs
    buf.extend(b"z")  # no buffer export left behind: a bytearray with one cannot resize
    assert len(encode(7, 1, 3, 1, 0, buf)) == FRAME_HEAD_SIZE + 4 + len(buf)


def test_a_payload_over_four_gib_is_refused_before_it_is_read() -> None:
    import mmap

    # Address space only: a private anonymous mapping the test never touches.
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0)
    huge = mmap.mmap(-1, MAX_U32 + 1, flags=flags)
    try:
        error = record_error(1, 1, 0, 0, 0, huge)
        assert isinstance(error, ValueError) and "does not fit a frame" in str(error)
    finally:
        huge.close()
