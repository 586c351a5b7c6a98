"""The compiled record decoder (segwal.format._speedups) against its pure reference.

``segwal.format.records`` has the reference functions; the C module has the same functions,
which must give equal results (same ``Record`` type, ``bytes`` payloads) and raise the same
exception types on the same bad input, in the same order of checks. Here the two meet on
hand-made frames, hypothesis-made frames, lying lengths, absurd arguments and random bytes;
then the selection (``SEGWAL_PURE``), leaks (refcounts, tracemalloc) and, when valgrind is
installed, a memcheck run of the C code.

Under ``CI=true`` a missing compiled module fails the run instead of skipping these tests:
CI always has a compiler, so a missing module there is a broken build.
"""

from __future__ import annotations

import array
import gc
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import segwal
from memcheck import run_memcheck
from segwal.format import encoder, records
from segwal.format.framing import encode_frames
from segwal.format.layout import FRAME_HEAD_SIZE, MAX_FRAME_RECORDS, MAX_LSN, FormatError
from segwal.format.scanner import Status, check
from segwal.storage import framereads
from segwal.types import Record
from strategies import payload_lists, record_types, timestamps

IN_CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")
BUILT = records.decode_records_c is not None

needs_c = pytest.mark.skipif(
    not BUILT and not IN_CI, reason="segwal.format._speedups is not built (no C compiler?)"
)


def c_decode() -> Callable[..., list[Record]]:
    if records.decode_records_c is None:
        pytest.fail("segwal.format._speedups is not built, and CI=true needs it")
    return records.decode_records_c


def c_spans() -> Callable[..., list[tuple[int, int]]]:
    if records.record_spans_c is None:
        pytest.fail("segwal.format._speedups is not built, and CI=true needs it")
    return records.record_spans_c


def frame_parts(payloads: list[bytes], prefix: bytes = b"", suffix: bytes = b"") -> bytes:
    """A length table and payloads (what follows a frame head), with junk around them."""
    table = struct.pack(f"<{len(payloads)}I", *map(len, payloads))
    return prefix + table + b"".join(payloads) + suffix


def outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[str, Any]:
    """What a call did: its result, or the type and message of what it raised."""
    try:
        return "ok", fn(*args, **kwargs)
    except Exception as exc:
        return type(exc).__name__, str(exc)


def same_outcome(py: tuple[str, Any], c: tuple[str, Any], messages: bool = True) -> None:
    """Equal results, or the same exception type; and the same message for the errors the
    decoders word themselves (not Python's own TypeError or BufferError wording)."""
    assert py[0] == c[0], (py, c)
    if py[0] == "ok" or (messages and py[0] in ("FormatError", "ValueError")):
        assert py == c


def check_records(got: list[Record]) -> None:
    for rec in got:
        assert type(rec) is Record
        assert type(rec.payload) is bytes


# --- the build and the selection ------------------------------------------------------------


def test_compiled_module_is_built_under_ci() -> None:
    if not IN_CI:
        if not BUILT:
            pytest.skip("segwal.format._speedups is not built (no C compiler?)")
        return
    assert BUILT, "CI=true: segwal.format._speedups must be built (pip install -e . with gcc)"
    expected = "python" if records.PURE_REQUESTED else "c"
    assert expected == records.IMPLEMENTATION


def test_the_read_path_uses_the_selected_decoder() -> None:
    assert framereads.stream_records is records.stream_records
    if records.IMPLEMENTATION == "c":
        assert records.decode_records is records.decode_records_c
        assert records.stream_records is records.decode_records_c
        assert records.record_spans is records.record_spans_c
    else:
        assert records.decode_records is records.decode_records_py
        assert records.stream_records is records.stream_records_py


def _implementation_in_child(pure: str | None, name: str = "SEGWAL_PURE") -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("SEGWAL_PURE", "SEGWAL_PURE_PYTHON")}
    if pure is not None:
        env[name] = pure
    code = (
        "from segwal.format import records; from segwal.storage import framereads; "
        "assert framereads.stream_records is records.stream_records; "
        "print(records.IMPLEMENTATION)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return proc.stdout.strip()


@pytest.mark.parametrize("name", ["SEGWAL_PURE", "SEGWAL_PURE_PYTHON"])
@pytest.mark.parametrize("value", ["1", "yes"])
def test_segwal_pure_forces_the_pure_path(value: str, name: str) -> None:
    assert _implementation_in_child(value, name) == "python"


@needs_c
@pytest.mark.parametrize("value", [None, "", "0"])
def test_compiled_path_by_default(value: str | None) -> None:
    c_decode()
    assert _implementation_in_child(value) == "c"


@needs_c
def test_replay_is_the_same_through_both_paths(tmp_path: Path) -> None:
    """A whole log replayed in a pure child equals the compiled replay here, record by record."""
    c_decode()
    path = tmp_path / "log"
    with segwal.open(path, sync="never") as wal:
        wal.append_batch([bytes([i % 256]) * (i % 70) for i in range(3000)], type=7)
        for i in range(50):
            wal.append(b"single %d" % i, type=i)
        wal.append_batch([b""] * 10)
        wal.sync()
    code = textwrap.dedent(
        f"""
        import pickle, sys, segwal
        from segwal.format import records
        assert records.IMPLEMENTATION == sys.argv[1]
        with segwal.open({str(path)!r}, readonly=True) as wal:
            got = [tuple(r) for r in wal.replay()]
            got += [tuple(wal.read(lsn)) for lsn in (1, 2999, 3000, 3001, 3050, 3060)]
            got += [tuple(r) for r in wal.replay(2990, 3005)]
        sys.stdout.buffer.write(pickle.dumps(got))
        """
    )
    runs = {}
    for impl, pure in (("python", "1"), ("c", "0")):
        env = dict(os.environ, SEGWAL_PURE=pure)
        proc = subprocess.run(
            [sys.executable, "-c", code, impl], env=env, capture_output=True, check=True
        )
        runs[impl] = pickle.loads(proc.stdout)
    assert runs["python"] == runs["c"]
    assert len(runs["c"]) == 3060 + 6 + 16


# --- hand-made frames -------------------------------------------------------------------------


@needs_c
@pytest.mark.parametrize(
    "payloads",
    [[], [b""], [b"", b""], [b"a"], [b"alpha", b"", b"gamma-gamma"], [bytes(range(256)) * 40]],
)
@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview, "slice", "array"])
def test_same_records_from_every_buffer_kind(payloads: list[bytes], kind: object) -> None:
    prefix, suffix = b"\x99" * 8, b"\x77" * 8  # junk on both sides must be left alone
    raw = frame_parts(payloads, prefix, suffix)
    end = len(raw) - len(suffix)
    buf: Any
    if kind == "slice":  # a memoryview into the middle of a larger buffer
        buf = memoryview(b"\x00" * 5 + raw + b"\x00" * 3)[5:-3]
    elif kind == "array":  # a buffer whose items are wider than a byte
        pad = (-len(raw)) % 4
        buf = array.array("I", raw + bytes(pad))
    else:
        assert callable(kind)
        buf = kind(raw)
    args = (buf, len(prefix), len(payloads), end, 41, 3, 123)
    py = records.decode_records_py(*args)
    c = c_decode()(*args)
    assert py == c == [Record(41 + i, 3, 123, p) for i, p in enumerate(payloads)]
    check_records(py)
    check_records(c)
    assert list(records.stream_records_py(*args)) == py
    spans = records.record_spans_py(buf, len(prefix), len(payloads), end)
    assert spans == c_spans()(buf, len(prefix), len(payloads), end)
    assert [raw[s:e] for s, e in spans] == payloads


@needs_c
def test_skip_and_stop_pick_the_same_records() -> None:
    payloads = [bytes([i]) * i for i in range(12)]
    raw = frame_parts(payloads)
    for skip in range(13):
        for stop in range(skip, 13):
            args = (raw, 0, 12, len(raw), 100, 1, 2, skip, stop)
            py = records.decode_records_py(*args)
            assert py == c_decode()(*args)
            assert py == c_decode()(*args[:7], skip=skip, stop=stop)
            assert [r.lsn for r in py] == list(range(100 + skip, 100 + stop))
            assert [r.payload for r in py] == payloads[skip:stop]


@needs_c
def test_a_real_frame_decodes_the_same() -> None:
    payloads = [b"alpha", b"", b"gamma-gamma"]
    raw = b"junk" + bytes(
        encode_frames(
            seed=7,
            first_lsn=1001,
            record_type=0xBEEF,
            timestamp_us=99,
            durable_lsn=0,
            payloads=payloads,
            lengths=[5, 0, 11],
        )
    )
    verdict = check(raw, 4, len(raw), 7, 1 << 20)
    assert verdict.status is Status.FRAME and verdict.frame is not None
    f = verdict.frame
    args = (raw, f.offset + FRAME_HEAD_SIZE, f.count, f.end, 1001, 0xBEEF, 99)
    assert records.decode_records_py(*args) == c_decode()(*args)
    assert [r.payload for r in c_decode()(*args)] == payloads


@needs_c
def test_max_count_of_empty_payloads() -> None:
    raw = frame_parts([b""] * MAX_FRAME_RECORDS)
    args = (raw, 0, MAX_FRAME_RECORDS, len(raw), MAX_LSN - MAX_FRAME_RECORDS + 1, 0xFFFF, 2**64 - 1)
    py = records.decode_records_py(*args)
    c = c_decode()(*args)
    assert py == c
    assert len(c) == MAX_FRAME_RECORDS and c[-1].lsn == MAX_LSN and c[0].payload == b""


@needs_c
def test_type_and_timestamp_objects_are_shared_not_copied() -> None:
    stamp, rtype = 2**64 - 1, 0xFFFF
    raw = frame_parts([b"a", b"b"])
    for fn in (records.decode_records_py, c_decode()):
        got = fn(raw, 0, 2, len(raw), 1, rtype, stamp)
        assert all(r.timestamp_us is stamp and r.type is rtype for r in got)


# --- lies and bad arguments ---------------------------------------------------------------------

RAW = frame_parts([b"ab", b"", b"cde"], b"\x00" * 4, b"\xff" * 4)  # table at 4, end at 25
GOOD = (RAW, 4, 3, 25, 5, 1, 9)


def _with(index: int, value: object) -> tuple[object, ...]:
    args = list(GOOD)
    args[index] = value
    return tuple(args)


LIES = {
    "end past the buffer": _with(3, len(RAW) + 1),
    "lengths sum past the end": _with(3, 24),
    "lengths sum short of the end": _with(3, 26),
    "table past the end": _with(1, 26),
    "count past the end": _with(2, 6),
    "count of 2**31": _with(2, 2**31),
    "count of 2**32 - 1": _with(2, 2**32 - 1),
    "count beyond 64 bits": _with(2, 2**70),
    "table beyond 64 bits": _with(1, 2**70),
    "end beyond 64 bits": _with(3, 2**70),
    "last LSN past MAX_LSN": _with(4, MAX_LSN - 1),
    "first LSN of 2**63": _with(4, 2**63),
    "first LSN beyond 64 bits": _with(4, 2**80),
    "negative table": _with(1, -1),
    "negative count": _with(2, -1),
    "negative end": _with(3, -5),
    "negative first LSN": _with(4, -1),
    "hugely negative first LSN": _with(4, -(2**80)),
    "float offset": _with(1, 4.0),
    "string count": _with(2, "3"),
    "None end": _with(3, None),
    "float LSN": _with(4, 5.0),
    "str buffer": _with(0, "not bytes"),
    "list buffer": _with(0, [1, 2, 3]),
    "non-contiguous view": _with(0, memoryview(RAW * 2)[::2]),
}


@needs_c
@pytest.mark.parametrize("args", list(LIES.values()), ids=list(LIES))
def test_lies_raise_the_same(args: tuple[Any, ...]) -> None:
    py = outcome(records.decode_records_py, *args)
    c = outcome(c_decode(), *args)
    assert py[0] != "ok"
    # Past 64 bits C clips an offset to the largest Py_ssize_t: the message shows that one.
    in_range = all(abs(a) < 2**63 for a in args if isinstance(a, int))
    same_outcome(py, c, messages=in_range)
    assert py[0] in ("FormatError", "ValueError", "TypeError", "BufferError")


@needs_c
@pytest.mark.parametrize(
    ("skip", "stop"), [(-1, None), (0, 4), (2, 1), (4, 4), (0, -1), (1.0, None), (0, "3")]
)
def test_bad_skip_and_stop_raise_the_same(skip: Any, stop: Any) -> None:
    py = outcome(records.decode_records_py, *GOOD, skip, stop)
    c = outcome(c_decode(), *GOOD, skip, stop)
    assert py[0] in ("ValueError", "TypeError")
    same_outcome(py, c)


@needs_c
def test_lying_lengths_never_read_out_of_bounds() -> None:
    """Every u32 value a length could lie with, in every slot: the same verdict both ways."""
    lies = [1, 2, 3, 4, 5, 21, 2**16, 2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1]
    for slot in range(3):
        for lie in lies:
            raw = bytearray(RAW)
            struct.pack_into("<I", raw, 4 + 4 * slot, lie)
            for end in (25, len(raw)):
                args = (bytes(raw), 4, 3, end, 5, 1, 9)
                py = outcome(records.decode_records_py, *args)
                c = outcome(c_decode(), *args)
                same_outcome(py, c)
                spans_py = outcome(records.record_spans_py, bytes(raw), 4, 3, end)
                spans_c = outcome(c_spans(), bytes(raw), 4, 3, end)
                same_outcome(spans_py, spans_c)


@needs_c
def test_format_error_is_the_layout_one() -> None:
    with pytest.raises(FormatError) as info:
        c_decode()(*_with(3, 24))
    assert info.value.reason == "record lengths disagree with the frame's body size"
    assert not info.value.newer


@needs_c
def test_wrong_arity_and_keywords_are_type_errors() -> None:
    decode = c_decode()
    with pytest.raises(TypeError):
        decode(*GOOD[:6])
    with pytest.raises(TypeError):
        decode(*GOOD, 0, None, 1)
    with pytest.raises(TypeError):
        decode(*GOOD, skop=1)
    with pytest.raises(TypeError):
        decode(*GOOD, 0, skip=1)
    with pytest.raises(TypeError):
        c_spans()(RAW, 4, 3)


# --- hypothesis ------------------------------------------------------------------------------

buffer_kinds = st.sampled_from(["bytes", "bytearray", "memoryview", "slice"])


def as_kind(raw: bytes, kind: str) -> Any:
    if kind == "bytearray":
        return bytearray(raw)
    if kind == "memoryview":
        return memoryview(raw)
    if kind == "slice":
        return memoryview(b"\x01\x02" + raw + b"\x03")[2:-1]
    return raw


@needs_c
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payloads=st.one_of(payload_lists, st.just([]), st.lists(st.just(b""), max_size=50)),
    prefix=st.binary(max_size=9),
    suffix=st.binary(max_size=9),
    first_lsn=st.integers(min_value=0, max_value=MAX_LSN),
    rtype=record_types,
    stamp=timestamps,
    kind=buffer_kinds,
    data=st.data(),
)
def test_hypothesis_frames_decode_the_same(
    payloads: list[bytes],
    prefix: bytes,
    suffix: bytes,
    first_lsn: int,
    rtype: int,
    stamp: int,
    kind: str,
    data: st.DataObject,
) -> None:
    raw = frame_parts(payloads, prefix, suffix)
    buf = as_kind(raw, kind)
    n = len(payloads)
    skip = data.draw(st.integers(min_value=0, max_value=n))
    stop = data.draw(st.one_of(st.none(), st.integers(min_value=skip, max_value=n)))
    args = (buf, len(prefix), n, len(raw) - len(suffix), first_lsn, rtype, stamp, skip, stop)
    py = outcome(records.decode_records_py, *args)
    c = outcome(c_decode(), *args)
    same_outcome(py, c)
    if py[0] == "ok":  # an LSN range past MAX_LSN is the only lie here
        check_records(c[1])
        stop_ = n if stop is None else stop
        assert [r.payload for r in c[1]] == payloads[skip:stop_]
        assert list(records.stream_records_py(*args)) == py[1]
    else:
        assert py[0] == "FormatError" and first_lsn + n - 1 > MAX_LSN


@needs_c
@settings(max_examples=500, deadline=None)
@given(
    raw=st.binary(max_size=200),
    table=st.integers(min_value=-3, max_value=210),
    count=st.one_of(st.integers(min_value=-2, max_value=60), st.sampled_from([2**32 - 1, 2**62])),
    end=st.integers(min_value=-3, max_value=210),
    first_lsn=st.one_of(st.integers(min_value=-2, max_value=10), st.just(MAX_LSN)),
    kind=buffer_kinds,
)
def test_hypothesis_random_bytes_give_the_same_verdict(
    raw: bytes, table: int, count: int, end: int, first_lsn: int, kind: str
) -> None:
    """Arbitrary bytes and offsets: equal records, or the same exception, never a crash."""
    buf = as_kind(raw, kind)
    py = outcome(records.decode_records_py, buf, table, count, end, first_lsn, 2, 3)
    c = outcome(c_decode(), buf, table, count, end, first_lsn, 2, 3)
    same_outcome(py, c)
    same_outcome(
        outcome(records.record_spans_py, buf, table, count, end),
        outcome(c_spans(), buf, table, count, end),
    )


@needs_c
@settings(max_examples=300, deadline=None)
@given(
    payloads=payload_lists,
    junk=st.binary(max_size=8),
    data=st.data(),
    kind=buffer_kinds,
)
def test_hypothesis_payload_offsets_and_payloads_agree(
    payloads: list[bytes], junk: bytes, data: st.DataObject, kind: str
) -> None:
    """The frame cache's offsets and replay_frames' payloads: the same in C and Python, and
    the same payloads the records carry."""
    raw = frame_parts(payloads, prefix=junk, suffix=junk)
    buf = as_kind(raw, kind)
    n, table = len(payloads), len(junk)
    end = len(raw) - len(junk)
    skip = data.draw(st.integers(min_value=0, max_value=n))
    stop = data.draw(st.integers(min_value=skip, max_value=n))
    offsets_c = records.payload_offsets_c
    payloads_c = records.decode_payloads_c
    if offsets_c is None or payloads_c is None:
        pytest.fail("segwal.format._speedups is not built, and CI=true needs it")
    py = outcome(records.payload_offsets_py, buf, table, n, end)
    same_outcome(py, outcome(offsets_c, buf, table, n, end))
    words = array.array("Q")
    words.frombytes(py[1])
    assert [raw[a:b] for a, b in pairwise(words)] == payloads
    got = outcome(records.decode_payloads_py, buf, table, n, end, skip, stop)
    same_outcome(got, outcome(payloads_c, buf, table, n, end, skip, stop))
    assert got == ("ok", payloads[skip:stop])
    assert all(type(p) is bytes for p in got[1])


@needs_c
@settings(max_examples=300, deadline=None)
@given(
    raw=st.binary(max_size=120),
    table=st.integers(min_value=-3, max_value=130),
    count=st.one_of(st.integers(min_value=-2, max_value=40), st.just(2**62)),
    end=st.integers(min_value=-3, max_value=130),
    skip=st.integers(min_value=-1, max_value=5),
    stop=st.integers(min_value=-1, max_value=8),
)
def test_hypothesis_payload_functions_refuse_lies_alike(
    raw: bytes, table: int, count: int, end: int, skip: int, stop: int
) -> None:
    """Arbitrary bytes and offsets: the same offsets or payloads, or the same error."""
    offsets_c = records.payload_offsets_c
    payloads_c = records.decode_payloads_c
    if offsets_c is None or payloads_c is None:
        pytest.fail("segwal.format._speedups is not built, and CI=true needs it")
    same_outcome(
        outcome(records.payload_offsets_py, raw, table, count, end),
        outcome(offsets_c, raw, table, count, end),
    )
    same_outcome(
        outcome(records.decode_payloads_py, raw, table, count, end, skip, stop),
        outcome(payloads_c, raw, table, count, end, skip, stop),
    )


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
def test_no_leak_over_100k_decodes() -> None:
    decode = c_decode()
    buf = bytearray(frame_parts([b"x" * 40, b"", b"y" * 7] * 3))
    rtype, stamp = 2**40 + 1, 2**63 + 5  # objects of their own, to count references to
    refs = (sys.getrefcount(buf), sys.getrefcount(rtype), sys.getrefcount(stamp))

    def ok() -> object:
        return decode(buf, 0, 9, len(buf), 1, rtype, stamp, 1, 8)

    def lie() -> object:
        try:
            decode(buf, 0, 9, len(buf) - 1, 1, rtype, stamp)
        except FormatError:
            return None
        raise AssertionError("no FormatError")

    def bad_arg() -> object:
        try:
            decode(buf, 0, 9, len(buf), -(2**80), rtype, stamp)
        except ValueError:
            return None
        raise AssertionError("no ValueError")

    for fn in (ok, lie, bad_arg):
        growth = _traced_growth(fn, 100_000)
        assert growth < 64 << 10, f"{fn.__name__}: {growth} bytes left after 100k calls"
    assert (sys.getrefcount(buf), sys.getrefcount(rtype), sys.getrefcount(stamp)) == refs
    buf.extend(b"z")  # no buffer export left behind: a bytearray with one cannot resize
    spans = c_spans()
    growth = _traced_growth(lambda: spans(buf, 0, 9, len(buf) - 1), 100_000)
    assert growth < 64 << 10


@needs_c
def test_records_are_left_out_of_the_collector_when_they_can_hold_no_cycle() -> None:
    raw = frame_parts([b"a", b"b"])
    plain = c_decode()(raw, 0, 2, len(raw), 1, 2, 3)
    assert not any(gc.is_tracked(r) for r in plain)
    # A record holding an object that could reach it stays tracked.
    odd = c_decode()(raw, 0, 2, len(raw), 1, [], 3)
    assert all(gc.is_tracked(r) for r in odd)


# --- valgrind --------------------------------------------------------------------------------

MEMCHECK_SCRIPT = """
import struct
from segwal.format import records
from segwal.format.layout import FormatError
decode, spans = records.decode_records_c, records.record_spans_c
payloads = [bytes([i % 256]) * (i % 50) for i in range(300)]
raw = struct.pack("<300I", *map(len, payloads)) + b"".join(payloads)
for buf in (raw, bytearray(raw), memoryview(raw), memoryview(b"xx" + raw + b"y")[2:-1]):
    assert len(decode(buf, 0, 300, len(raw), 1, 2, 3)) == 300
    assert len(decode(buf, 0, 300, len(raw), 1, 2, 3, 10, 20)) == 10
    assert len(spans(buf, 0, 300, len(raw))) == 300
# Every length slot lies with a huge value; every end is tried.
for slot in (0, 150, 299):
    bad = bytearray(raw)
    struct.pack_into("<I", bad, 4 * slot, 0xFFFFFFFF)
    for end in (len(raw), len(raw) - 1, len(raw) + 1, 1200, 3):
        for call in (lambda: decode(bytes(bad), 0, 300, end, 1, 2, 3),
                     lambda: spans(bytes(bad), 0, 300, end)):
            try:
                call()
            except (FormatError, ValueError):
                pass
for count in (2**31, 2**32 - 1, 2**62, 301):
    try:
        decode(raw, 0, count, len(raw), 1, 2, 3)
    except FormatError:
        pass
# The frame cache's functions: offsets, payloads, and hits on honest and lying rows.
import array
offsets, payloads_of, hit = (
    records.payload_offsets_c, records.decode_payloads_c, records.cached_record_c
)
for end in (len(raw), len(raw) - 1, 3):
    for call in (lambda: offsets(raw, 0, 300, end), lambda: payloads_of(raw, 0, 300, end, 5, 9)):
        try:
            call()
        except (FormatError, ValueError):
            pass
blob = raw + offsets(raw, 0, 300, len(raw))
firsts = array.array("q", [1])
for base in (len(raw), len(blob) - 16, len(blob) + 8, 0):
    words = array.array("Q", [1, 301, 2, 3, base])
    for lsn in (0, 1, 150, 300, 301, 2**70):
        try:
            hit(firsts, words, [blob], bytearray(1), lsn)
        except FormatError:
            pass
# The one-record encoder (segwal.format._encode): every size around the CRC's 8-byte steps
# and the stack/heap frame boundary, every buffer kind, bad arguments, and its write.
import os, tempfile
from segwal.format import _encode, encoder, framing
enc, write = encoder.encode_record_c, encoder.write_record
assert enc is not None and write is not None
for size in (0, 1, 7, 8, 9, 100, 1024, 8147, 8148, 8149, 70000):
    data = bytes(range(256)) * (size // 256 + 1)
    for buf in (data[:size], bytearray(data[:size]), memoryview(b"a" + data)[1 : size + 1]):
        assert enc(7, 1, 2, 3, 4, buf) == framing.encode_record(7, 1, 2, 3, 4, bytes(buf))
    assert _encode.crc32c_soft(data[:size]) == _encode.crc32c(data[:size])
for bad in ((7, -1, 2, 3, 4, b"x"), (7, 1, 2**16, 3, 4, b"x"), (7, 1, 2, 3, 4, "x"),
            (2**32, 1, 2, 3, 4, b"x"), (7, 1, 2, 3, 4, memoryview(b"abcd")[::2])):
    try:
        enc(*bad)
    except (ValueError, TypeError, BufferError):
        pass
fd, name = tempfile.mkstemp()
offset = 0
for size in (0, 100, 1024, 8148, 70000):
    offset += write(fd, offset, 7, 1, 2, 3, 4, b"p" * size)
assert os.pread(fd, offset, 0)[:44] == enc(7, 1, 2, 3, 4, b"")
os.close(fd)
os.unlink(name)
try:
    write(fd, 0, 7, 1, 2, 3, 4, b"closed")
except OSError:
    pass
print("memcheck-script-done")
"""


@needs_c
@pytest.mark.timeout(180)
def test_valgrind_memcheck_finds_no_invalid_access(tmp_path: Path) -> None:
    """The C code under memcheck: no invalid read or write, no error in a _speedups or
    _encode frame.

    About 7 s here (Python's start-up under valgrind is most of it); skipped without valgrind.
    """
    c_decode()
    if encoder.encode_record_c is None:
        pytest.fail("segwal.format._encode is not built beside _speedups")
    run_memcheck(tmp_path, MEMCHECK_SCRIPT, ("_speedups", "_encode"), timeout=170)
