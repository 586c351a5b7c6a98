"""Fuzzing in CI: the shared structure-aware target (tests/fuzz_target.py) under hypothesis.

About 20,000 inputs per run, reproducible (``derandomize=True``, no example database): raw
bytes (which the target still reads as a program: a reference log and mutations) and
structured programs whose mutation arguments lean on boundary values. Every file in
``tests/fuzz_seeds/`` is replayed; seeds of findings not fixed yet run as strict xfails, so a
fix shows up as an XPASS that asks for its entry in ``OPEN_SEEDS`` to go.

A finding is any exception that is not a ``segwal.SegwalError`` or a broken invariant of the
target. Known, not yet fixed findings (``fuzz_target.KNOWN_FINDINGS``) are counted, not
failed, so the run keeps looking for new ones. A sample of inputs runs under tracemalloc and
must peak below 64 MiB; every input must finish in a few seconds. ``fuzz/atheris_fuzz.py``
runs the same target for hours.

Set ``SEGWAL_FUZZ_EXAMPLES`` to change the number of inputs per test (default 5,000).
"""

from __future__ import annotations

import logging
import os
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_target import (
    ARG_BYTES,
    KNOWN_FINDINGS,
    OPCODES,
    describe,
    encode_op,
    fuzz_one,
    fuzz_v2_one,
    known_finding,
    reference_logs,
)

EXAMPLES = int(os.environ.get("SEGWAL_FUZZ_EXAMPLES", "5000"))
MEMORY_EVERY = 40  # one input in this many runs under tracemalloc
MEMORY_LIMIT = 64 << 20
TIME_LIMIT = 10.0  # seconds for one input; typical inputs take a few milliseconds
SEEDS = Path(__file__).resolve().parent / "fuzz_seeds"

# Seeds of findings that are not fixed yet: file name -> finding id (see KNOWN_FINDINGS).
OPEN_SEEDS: dict[str, str] = {}  # every finding so far (F1-F6) is fixed; seeds stay as regressions

STATS: Counter[str] = Counter()
PEAKS: list[int] = []
SLOWEST: list[float] = [0.0]

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(autouse=True, scope="module")
def _quiet_and_ready() -> Iterator[None]:
    # Recovery logs a warning per cut; thousands of them would only slow the run down.
    logger = logging.getLogger("segwal")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    reference_logs()
    yield
    logger.setLevel(level)


@contextmanager
def _memory(measure: bool) -> Iterator[None]:
    if not measure:
        yield
        return
    tracemalloc.start()
    try:
        yield
        PEAKS.append(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()


def run_one(data: bytes) -> None:
    """Run the target on one input; known findings are counted, anything else fails."""
    STATS["inputs"] += 1
    measure = STATS["inputs"] % MEMORY_EVERY == 0
    start = time.perf_counter()
    try:
        with _memory(measure):
            fuzz_one(data)
    except Exception as exc:
        known = known_finding(exc, data)
        if known is None:
            raise AssertionError(
                f"fuzz finding: {exc!r}\n  input (hex): {data.hex()}\n  {describe(data)}"
            ) from exc
        STATS[known] += 1
    elapsed = time.perf_counter() - start
    SLOWEST[0] = max(SLOWEST[0], elapsed)
    assert elapsed < TIME_LIMIT, f"input took {elapsed:.1f} s: {data.hex()}"
    if measure:
        assert PEAKS[-1] < MEMORY_LIMIT, f"input peaked at {PEAKS[-1]} bytes: {data.hex()}"


# -- strategies ----------------------------------------------------------------------------

_BOUNDARY_BYTES = [0, 1, 2, 3, 4, 7, 8, 0x0F, 0x10, 0x3F, 0x40, 0x7F, 0x80, 0xFE, 0xFF]

args = st.one_of(
    st.binary(min_size=ARG_BYTES, max_size=ARG_BYTES),
    st.lists(st.sampled_from(_BOUNDARY_BYTES), min_size=ARG_BYTES, max_size=ARG_BYTES).map(bytes),
)
blobs = st.one_of(
    st.just(b""),
    st.binary(max_size=64),
    st.sampled_from([b"R", b"S", b"\x00" * 40, b"\xff" * 40, b"RRRR", b"\x89SEGWAL\n"]),
)
ops = st.builds(encode_op, st.sampled_from(OPCODES), args, blobs)


@st.composite
def programs(draw: st.DrawFn) -> bytes:
    """A fuzz input built op by op: a reference log, the checks, 1-5 mutations."""
    flavour = draw(st.integers(0, 255))
    options = draw(st.integers(0, 255))
    reads = draw(st.binary(min_size=6, max_size=6)) if options & 16 else b""
    body = b"".join(draw(st.lists(ops, min_size=1, max_size=5)))
    return bytes([flavour, options]) + reads + body


# -- tests ---------------------------------------------------------------------------------


@pytest.mark.timeout(900)
@FUZZ
@given(st.binary(max_size=512))
def test_fuzz_raw_bytes(data: bytes) -> None:
    run_one(data)


@pytest.mark.timeout(900)
@FUZZ
@given(programs())
def test_fuzz_programs(data: bytes) -> None:
    run_one(data)


@pytest.mark.timeout(900)
@FUZZ
@given(st.lists(ops, min_size=1, max_size=3).map(b"".join), st.integers(0, 3))
def test_fuzz_single_flavour_programs(body: bytes, flavour: int) -> None:
    # Every check switched on (strict, truncate, readonly, append and reads).
    run_one(bytes([flavour, 0xFF]) + b"\x01\x00\x07\x00\xff\xff" + body)


@pytest.mark.timeout(900)
@FUZZ
@given(st.binary(min_size=1, max_size=3000))
def test_fuzz_raw_segments(blob: bytes) -> None:
    # The empty flavour and raw segments: the input is the file, chunked over a few names.
    chunks = [blob[i : i + 255] for i in range(0, len(blob), 255)][:6]
    body = b"".join(
        encode_op("raw_segment", bytes([i % 4, i, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), chunk)
        for i, chunk in enumerate(chunks)
    )
    run_one(bytes([4, 0x0F]) + body)


def _seed_params() -> list[object]:
    out: list[object] = []
    for path in sorted(SEEDS.glob("*.bin")):
        finding = OPEN_SEEDS.get(path.name)
        marks = (
            [pytest.mark.xfail(strict=True, reason=f"{finding}: {KNOWN_FINDINGS[finding]}")]
            if finding
            else []
        )
        out.append(pytest.param(path, marks=marks, id=path.stem))
    return out


@pytest.mark.parametrize("path", _seed_params())
def test_seed(path: Path) -> None:
    """Every regression seed runs clean (open findings: strict xfail until fixed)."""
    fuzz_one(path.read_bytes())


def test_open_seeds_exist() -> None:
    missing = [name for name in OPEN_SEEDS if not (SEEDS / name).exists()]
    assert not missing, f"seeds listed in OPEN_SEEDS but missing: {missing}"


def test_seeds_still_hit_their_finding() -> None:
    """Each open seed fails the way its finding says (so the xfail is not hiding another bug)."""
    for name, finding in OPEN_SEEDS.items():
        data = (SEEDS / name).read_bytes()
        try:
            fuzz_one(data)
        except Exception as exc:
            assert known_finding(exc, data) == finding, f"{name}: {exc!r}"
        else:
            pytest.fail(f"{name} no longer fails: {finding} looks fixed; remove it from OPEN_SEEDS")


def test_zz_fuzz_counts(capsys: pytest.CaptureFixture[str]) -> None:
    """Print what the fuzz tests ran (runs last in this file)."""
    if not STATS["inputs"]:
        pytest.skip("no fuzz test ran in this session")
    known = ", ".join(f"{k} {STATS[k]}" for k in sorted(KNOWN_FINDINGS) if STATS[k])
    with capsys.disabled():
        print(
            f"\nfuzz: {STATS['inputs']} inputs; known findings hit: {known or 'none'}; "
            f"slowest input {SLOWEST[0] * 1000:.0f} ms; traced peak over {len(PEAKS)} sampled "
            f"inputs {max(PEAKS, default=0) / 2**20:.1f} MiB"
        )


@pytest.mark.timeout(900)
@settings(FUZZ, max_examples=max(50, EXAMPLES // 10))
@given(programs())
def test_fuzz_v2_programs(data: bytes) -> None:
    """The same programs on a compressed log and on a compressed and encrypted one."""
    STATS["inputs"] += 1
    start = time.perf_counter()
    try:
        fuzz_v2_one(data)
    except Exception as exc:
        raise AssertionError(f"fuzz finding (v2): {exc!r}\n  input (hex): {data.hex()}") from exc
    assert time.perf_counter() - start < TIME_LIMIT, f"slow input: {data.hex()}"
