"""Crash-state enumeration (the durability proof): crash every workload at every operation
index, recover every crash image the fault model allows, and check the promise.

The harness is ``tests/crashlib.py`` (its docstring says what is checked and how). Here:

- the log's creation, in every sync mode;
- the bounded-exhaustive set: every sequence of up to three steps from {append, batch of 3,
  rotate, sync, close + reopen, truncate_before, truncate_after, apply_retention under a
  live reader, hold/release}, on an empty log and on a log of four segments, in every sync
  mode, with segments of 512-640 bytes so rotation and retention happen;
- every sequence of up to two of {batch, close + reopen, truncate_after} on a log of
  compressed (zstd) frames and on one of encrypted frames (format v2), sync "never", and
  from the creation of an encrypted log (its KEYS file first);
- every sequence of up to two of {append, batch, rotate, close + reopen, truncate_after}
  on a preallocated log (preallocate=True) and on a direct_io=True log, each alone and with
  zstd + encryption, sync "always" and "never";
- seeded random workloads of 10-30 steps (those steps, records larger than a segment,
  prune_through, consumer cursors, random LSN arguments) until the run has checked
  ``TARGET`` distinct crash states;
- the totals, printed at the end of the run (also with ``-q``, through ``capsys.disabled``).

Worker processes: ``SEGWAL_CRASH_PROCS`` (default: one per core, at most two).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

import crashlib
import segwal
from crashlib import MODES, Policy, Spec
from segwal.testing import MemoryFileSystem

SEED = 20_240_611
TARGET = 200_000  # distinct crash states per run
MARGIN = 10_000  # the random workloads aim this far past the target
RANDOM_BATCH = 2  # random workloads per round (one call of run_specs, one per process)
ROUND_SECONDS = 170  # each random test starts no new round after this (the timeout is 300)
# Random workloads pile up pending units (index sidecars are never synced): every subset of
# up to 6, beyond that prefixes, single units, all-but-one and 16 random subsets.
RANDOM_POLICY = Policy(seed=SEED, exhaustive_limit=6, random_subsets=16)


@dataclass
class _Session:
    """What the tests of this module checked, for the totals."""

    keys: set[bytes] = field(default_factory=set)
    totals: crashlib.Totals = field(default_factory=lambda: crashlib.Totals(seeds={SEED}))
    wall: float = 0.0
    parts: dict[str, int] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)


Session = _Session()


WORKERS = crashlib.Workers()  # kept for the whole module: its processes remember images


@pytest.fixture(scope="module", autouse=True)
def _workers() -> Iterator[None]:
    yield
    WORKERS.close()


def _run(name: str, specs: list[Spec], policy: Policy | None = None, **kw: object) -> None:
    began = time.perf_counter()
    report = crashlib.run_specs(specs, policy or Policy(seed=SEED), workers=WORKERS, **kw)  # type: ignore[arg-type]
    Session.wall += time.perf_counter() - began
    new = len(report.keys - Session.keys)
    Session.keys |= report.keys
    Session.totals.add(report.totals)
    Session.parts[name] = new
    assert report.violation is None, f"broken promise in {report.failed_spec}:\n{report.violation}"


@pytest.mark.parametrize("mode", MODES)
def test_creating_the_log(mode: str) -> None:
    _run(f"creation/{mode}", crashlib.creation_specs((mode,)))


# "interval" runs beside "never": with the flusher never firing, its recordings are identical
# operation for operation, and a process enumerates an identical recording once.
MODE_GROUPS = {"always": ("always",), "never+interval": ("never", "interval")}
HALVES = (crashlib.OPS[:4], crashlib.OPS[4:])  # by the first step, to keep each test short


@pytest.mark.parametrize("half", [0, 1])
@pytest.mark.parametrize("base", ["empty", "full"])
@pytest.mark.parametrize("group", list(MODE_GROUPS))
def test_every_sequence_of_three_steps(group: str, base: str, half: int) -> None:
    modes = MODE_GROUPS[group]
    specs = crashlib.exhaustive_specs(modes, (base,), depth=3, first=HALVES[half])
    _run(f"exhaustive/{group}/{base}/{half}", specs, chunk=len(modes) * 5)


@pytest.mark.parametrize(
    "coding", ["full-zstd", "full-encrypted", "new-encrypted", "new-zstd-dict"]
)
def test_every_sequence_of_two_steps_on_a_v2_log(coding: str) -> None:
    """Format v2: compressed or encrypted frames keep the promise through every pair of
    steps (rewinds re-encode a batch, resumes draw a new nonce prefix)."""
    steps = ("batch", "reopen", "trunc_after")  # the ones that write or re-encode frames
    specs = crashlib.exhaustive_specs(("never",), (coding,), depth=2, alphabet=steps)
    _run(f"exhaustive-v2/{coding}", specs, chunk=4)


@pytest.mark.parametrize("coding", ["full-prealloc", "full-prealloc-coded"])
@pytest.mark.parametrize("mode", ["always", "never"])
def test_every_sequence_of_two_steps_on_a_preallocated_log(coding: str, mode: str) -> None:
    """preallocate=True: zeros after the last frame (the data ends at the first zero frame
    head with nothing but zeros after it), grown a step at a time and trimmed at the seal;
    alone and with compressed, encrypted frames."""
    steps = ("append", "batch", "rotate", "reopen", "trunc_after")
    specs = crashlib.exhaustive_specs((mode,), (coding,), depth=2, alphabet=steps)
    _run(f"exhaustive-prealloc/{coding}/{mode}", specs, chunk=4)


@pytest.mark.parametrize(
    ("coding", "mode"), [("full-direct", "always"), ("full-direct-coded", "never")]
)
def test_every_sequence_of_two_steps_with_direct_io(coding: str, mode: str) -> None:
    """direct_io=True: every write rewrites the partial last block (its stored bytes, never
    re-encoded) in whole 4 KiB blocks, which a crash tears into 512-byte pieces; the steps
    that write, seal, resume and rewrite (a 4 KiB block is 8 pieces: two steps, one mode
    per coding, keep the run to a few minutes; the seal's block write is covered on the plain
    log)."""
    steps = ("append", "rotate", "reopen", "trunc_after")
    if coding == "full-direct-coded":
        steps = ("append", "reopen", "trunc_after")
    specs = crashlib.exhaustive_specs((mode,), (coding,), depth=2, alphabet=steps)
    _run(f"exhaustive-direct/{coding}/{mode}", specs, chunk=4)


@pytest.mark.parametrize("mode", MODES)
def test_random_workloads(mode: str) -> None:
    """Seeded random workloads in rounds, until this mode's share of the target is met
    (the three modes together bring the run to ``TARGET`` states)."""
    index = MODES.index(mode)
    goal = len(Session.keys) + max(0, TARGET + MARGIN - len(Session.keys)) // (len(MODES) - index)
    began = time.perf_counter()
    round_no = 0
    while len(Session.keys) < goal and time.perf_counter() - began < ROUND_SECONDS:
        seed = SEED + 1000 * round_no + index
        specs = crashlib.random_specs(seed, RANDOM_BATCH, (mode,))
        _run(f"random/{mode}/{round_no}", specs, RANDOM_POLICY, chunk=1)
        round_no += 1
    Session.done.add(f"random/{mode}")


# -- the harness itself ----------------------------------------------------------------------


def test_strip_lock_keeps_everything_but_lock() -> None:
    fs = MemoryFileSystem()
    with segwal.open("/log", filesystem=fs, segment_bytes=512) as wal:
        for i in range(8):
            wal.append(b"x" * (40 + i))
        wal.rotate()
    stripped = crashlib.strip_lock(fs)
    tree = {p: c for p, c in fs.tree().items() if p != crashlib.LOCK_PATH}
    assert stripped.tree() == tree
    assert not any(op.path == crashlib.LOCK_PATH for op in stripped.ops)
    assert {op.site for op in stripped.ops if op.site} == {
        op.site for op in fs.ops if op.site and not op.skipped
    }


def test_expectations_accept_prefixes_at_batch_ends_only() -> None:
    payloads = (b"a", b"b", b"c", b"d")
    snap = crashlib.Snap(1, 4, payloads, frozenset({1, 4}), ())
    assert snap.allows(1, (), ())
    assert snap.allows(1, (b"a",), ())
    assert not snap.allows(1, (b"a", b"b"), ())  # inside the batch 2..4
    assert snap.allows(1, payloads, ())
    assert not snap.allows(1, (b"a", b"x", b"c", b"d"), ())
    assert not snap.allows(2, (b"b", b"c", b"d"), ())  # the first LSN moved
    assert not snap.allows(1, payloads, (("h", 1),))  # a hold appeared
    expect = crashlib.Expect((snap,), 1, 1, "test")
    assert expect.problem((1, (), ())) is not None  # LSN 1 was acknowledged
    assert expect.problem((1, (b"a",), ())) is None


def test_the_harness_catches_a_lost_acknowledged_append() -> None:
    """Skipping the append barrier loses acknowledged records: the enumeration must say so."""
    enumerator = crashlib.Enumerator(Policy(seed=SEED), skip={"append.sync"})
    spec = Spec("always", "empty", (("append", None), ("append", None)))
    with pytest.raises(crashlib.Violation, match=r"recovered LSNs 1\.\.0"):
        enumerator.run(spec)


def test_reopen_makes_a_sealed_tail_durable_before_the_next_segment() -> None:
    fs = MemoryFileSystem()
    with segwal.open("/log", filesystem=fs, segment_bytes=4096) as wal:
        wal.append(b"a" * 100)
        wal.rotate()
    # The writer is killed after writing the seal, before its fdatasync: the page cache
    # holds the seal. A new process reopens the log, then the machine loses power.
    seal_sync = next(op.index for op in fs.ops if op.kind == "sync" and op.site == "seal.sync")
    live = fs.replay(seal_sync)
    segwal.open("/log", filesystem=live).close()
    broken = []
    for image in live.crash_states():
        try:
            segwal.open("/log", filesystem=image).close()
        except segwal.CorruptionError as exc:
            broken.append(f"{image.crash_info}: {exc}")
    assert broken == []


def test_reopen_makes_the_log_directory_durable() -> None:
    fs = MemoryFileSystem()
    segwal.open("/data/log", filesystem=fs).close()
    # The creator is killed after mkdir, before the fsync of the parent directory.
    mkdir = next(op.index for op in fs.ops if op.kind == "mkdir" and op.path == "/data/log")
    live = fs.replay(mkdir + 1)
    with segwal.open("/data/log", filesystem=live) as wal:  # a new process opens the log
        wal.append(b"acknowledged")  # sync="always": durable when it returns
    lost = [
        image.crash_info
        for image in live.crash_states()
        if [r.payload for r in _replay(image, "/data/log")] != [b"acknowledged"]
    ]
    assert lost == []


def test_recovery_makes_meta_durable_before_acting_on_it() -> None:
    fs = MemoryFileSystem()
    with segwal.open("/log", filesystem=fs, segment_bytes=4096) as wal:
        wal.append(b"one")
        wal.rotate()
        wal.truncate_after(0)
    # The writer is killed right after renaming META (intent: truncate_after=0) into place,
    # before the directory fsync; a new process reopens and finishes the rewind; then the
    # machine loses power at any point of that reopen.
    rename = next(op.index for op in fs.ops if op.kind == "rename" and op.target == "/log/META")
    live = fs.replay(rename + 1)
    segwal.open("/log", filesystem=live).close()
    found = set()
    for k, state in live.replays():
        if k > rename + 1:
            for image in state.crash_states():
                with segwal.open("/log", filesystem=image) as wal:
                    found.add((wal.first_lsn, tuple(r.payload for r in wal.replay())))
    # Before the rewind (LSN 1 kept) or after it (nothing, next LSN 1): never LSN 1 gone
    # with the next append getting LSN 2.
    assert found <= {(1, (b"one",)), (1, ())}


def _replay(image: MemoryFileSystem, path: str) -> list[segwal.Record]:
    with segwal.open(path, filesystem=image) as wal:
        return list(wal.replay())


def test_known_bugs_have_xfail_tests() -> None:
    """Every KNOWN_BUGS entry (tolerated in kill scenarios) needs a strict xfail test here;
    none is open now, so no kill scenario may break the promise."""
    names = {name for name, _ in crashlib.KNOWN_BUGS}
    assert names == set(), "add a strict xfail test per KNOWN_BUGS entry, then update this"


# -- totals ----------------------------------------------------------------------------------


def test_crash_state_totals(capsys: pytest.CaptureFixture[str]) -> None:
    """Print what the run covered; with the whole module run, require ``TARGET`` states."""
    totals = Session.totals
    line = (
        f"crash states: {len(Session.keys)} distinct (target {TARGET}), "
        f"{totals.workloads} workloads, seed {SEED}, {Session.wall:.0f} s wall; "
        f"{totals.line()}"
    )
    with capsys.disabled():
        print(f"\n{line}")
        for bug, count in sorted(totals.known.items()):
            print(f"  known bug (xfail test): {bug}: {count} kill scenarios")
        groups: dict[str, int] = {}
        for name, count in Session.parts.items():
            group = "/".join(name.split("/")[:2])
            groups[group] = groups.get(group, 0) + count
        for group, count in groups.items():
            print(f"  {group}: {count} new distinct states")
    complete = all(
        f"exhaustive/{g}/{b}/{h}" in Session.parts
        for g in MODE_GROUPS
        for b in ("empty", "full")
        for h in (0, 1)
    )
    if complete and all(f"random/{m}" in Session.done for m in MODES):
        assert len(Session.keys) >= TARGET, line
