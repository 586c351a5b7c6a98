"""Crash-state enumeration: run a workload on the recording in-memory file system, crash it
at every operation index, and check recovery on every disk a power loss could leave.

The harness of ``shared/RELIABILITY.md``, in five parts:

1. **Record** (:class:`Runner`). A workload (:class:`Spec`: sync mode, starting log, steps)
   runs on a :class:`~segwal.testing.MemoryFileSystem`. Before step ``j`` it notes
   ``("op", j)``; after it, ``mark_ack(j)``. Beside the op log it keeps a :class:`Snap` of
   the log's logical content after every step (first LSN, every payload, the LSNs that end
   a batch, the holds) and the durable LSN the step returned with: what is *acknowledged*.
   Payloads are unique per append, so a payload names the one append that wrote it, even
   after ``truncate_after`` let an LSN be reused.
2. **Strip** (:func:`strip_lock`). ``LOCK`` only serves live readers, is never synced and
   recovery never reads it, yet each of its writes would be one more pending unit and
   double the crash states. The op log is re-executed through the public seam on a fresh
   file system without the ``LOCK`` operations, so the subset budget goes to the log.
3. **Crash** (:class:`Enumerator`). At every operation index ``k`` (``fs.replays()``) the
   images of ``crash_states`` are recovered and checked. Images are deduplicated by a
   fingerprint of every file (``LOCK`` aside) and each distinct image is recovered once; one
   met again, at another ``k`` or in another workload, is only held to the new expectations.
   A crash point right after a barrier is skipped when the point before it drew every subset
   of its pending units: its images are exactly those of the point before in which the
   synced units persisted (they are still checked when the step's acknowledgement needs
   them).
4. **Check** (:func:`recover`, :class:`Expect`). ``segwal.open(recovery="tolerate_tail")``
   never raises; the records are LSNs ``first..m`` without a gap; they equal, byte for byte,
   the first records of the log as it stood after some step ``t`` in the allowed window,
   with that step's first LSN and holds, ending at a batch end (a batch is all-or-nothing);
   every acknowledged record that no truncation started since may have dropped is there.
   When recovery repaired anything, and for a sample of the rest, a new append must get
   ``m + 1`` and a second open must agree.
5. **Crash again.** (a) *During recovery*: when recovery changed the disk, its operations
   and the first append after it are recorded, and every crash state inside them must
   recover to what the uninterrupted recovery gave (plus the new record once its append has
   started; with it once the append returned). Recoveries doing the same operations are
   crashed inside once. (b) *Process kill, then power loss*: right after each step, and
   inside it just before each barrier (where the page cache holds the most that is not
   durable), the process dies with the page cache intact; the log is reopened on that live
   state (it must find every record written), and the machine then loses power at any point
   of that reopen and its first append: what the reopen counted as durable must stay.
   Kill scenarios that hit a bug listed in ``KNOWN_BUGS`` are counted, not failed.

The allowed window: after step ``j`` returned, any step ``t`` from the last one that
durably changed what the log holds (a truncation, retention or a checkpoint moving the
first LSN, a hold: all are durable when the call returns) up to ``j``; while ``j`` runs,
from that floor before ``j`` up to ``j``. Unsynced appends may be lost, so ``m`` may stop
short of step ``t``'s last LSN; acknowledged records may not.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing
import os
import random
import re
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import segwal
from segwal.errors import HoldError
from segwal.testing import FILLS, MemoryFileSystem, Op

PATH = "/log"
LOCK_PATH = "/log/LOCK"
T0 = 1_700_000_000_000_000
CHECK_T0 = T0 + 10**12  # the checker's clock runs far ahead of every workload's
MODES = ("always", "interval", "never")
EXTRA = b"new record after recovery"
SRC = Path(segwal.__file__).parent

# The bounded-exhaustive alphabet: every sequence of up to three of these, in every mode.
OPS = (
    "append",
    "batch",
    "rotate",
    "sync",
    "reopen",
    "trunc_before",
    "trunc_after",
    "retention",
    "hold",
)
# Random workloads add a record larger than a segment, prune_through and a consumer cursor.
# "rewind_seg" is truncate_after at the end of the last sealed segment (no rewrite needed).
RANDOM_OPS = (*OPS, "big", "prune", "cursor", "rewind_seg")
RANDOM_WEIGHTS = (8, 4, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1)


# Bugs this harness found that are not fixed yet, as substrings that all appear in the
# violation. A kill scenario that breaks the promise this way is counted (see the totals)
# instead of failing the run, so the rest is still checked; each bug has a strict xfail test
# in test_crash_states.py that starts to pass once it is fixed: then delete the entry.
KNOWN_BUGS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # None open. The three this harness found (a sealed tail not synced before the next
    # segment at reopen, the parent of an existing log directory not synced, recovery acting
    # on a non-durable META) are fixed; their regression tests are in test_crash_states.py.
)


def known_bug(violation: str) -> str | None:
    for name, parts in KNOWN_BUGS:
        if all(part in violation for part in parts):
            return name
    return None


def sync_sites() -> list[str]:
    """Every barrier call site label in ``src/segwal`` (``.sync("x")``, ``sync_dir(d, "x")``),
    the in-memory file system aside."""
    found: set[str] = set()
    for path in SRC.rglob("*.py"):
        if path.relative_to(SRC).parts[0] == "testing":
            continue
        text = path.read_text()
        found.update(re.findall(r"\.sync\(\s*\"([^\"]+)\"\s*\)", text))
        found.update(re.findall(r"sync_dir\([^()]*?,\s*\"([^\"]+)\"\s*\)", text))
    return sorted(found)


@dataclass(frozen=True, slots=True)
class BaseConfig:
    """A starting log and the options every workload on it opens with."""

    name: str
    segment_bytes: int
    retention_max_bytes: int
    prefill: int  # records appended (and the log closed) before the workload; -1: no log
    # format v2, "+"-joined: "zstd" (compressed frames), "encrypted" (AES-256-GCM),
    # "prealloc" (preallocate=True: a zeroed tail allocated ahead of the frames), "direct"
    # (direct_io=True: O_DIRECT writes of whole blocks)
    coding: str = ""


BASES = {
    "new": BaseConfig("new", 512, 1536, -1),  # no directory yet: the opening creates the log
    "empty": BaseConfig("empty", 512, 1536, 0),
    "full": BaseConfig("full", 640, 1920, 14),  # three sealed segments and an active one
    # Format v2 (a few seconds each in test_crash_states): the same promise when frames are
    # compressed or encrypted, recovery cuts and rewinds re-encoding them.
    "full-zstd": BaseConfig("full-zstd", 640, 1920, 14, "zstd"),
    "full-encrypted": BaseConfig("full-encrypted", 700, 2100, 14, "encrypted"),
    # The encrypted log's creation: KEYS made durable before its first segment exists.
    "new-encrypted": BaseConfig("new-encrypted", 700, 2100, -1, "encrypted"),
    # A log created compressed with a trained dictionary: the dictionary file made durable
    # before the first segment that names it (issue 11; test_dict_crash adds a second one).
    "new-zstd-dict": BaseConfig("new-zstd-dict", 700, 2100, -1, "zstd-dict"),
    # Preallocation: zeros after the last frame, trimmed at the seal; alone and with both
    # codecs (docs/DURABILITY.md, "Preallocation").
    "full-prealloc": BaseConfig("full-prealloc", 640, 1920, 14, "prealloc"),
    "new-prealloc": BaseConfig("new-prealloc", 640, 1920, -1, "prealloc"),
    # direct_io=True: whole 4 KiB blocks, the partial last one rewritten from its stored
    # bytes with each write (segments of 8 KiB, so a few appends share a block).
    "full-direct": BaseConfig("full-direct", 8192, 24576, 14, "direct"),
    "full-direct-coded": BaseConfig("full-direct-coded", 8192, 24576, 14, "direct+zstd+encrypted"),
    "new-direct": BaseConfig("new-direct", 8192, 24576, -1, "direct"),
    "full-prealloc-coded": BaseConfig(
        "full-prealloc-coded", 700, 2100, 14, "prealloc+zstd+encrypted"
    ),
}
KEK: Final = bytes(range(32))  # the encrypted bases' key-encryption key


def coding_options(cfg: BaseConfig) -> dict[str, object]:
    """The segwal.open options of a base's coding. An encrypted base goes through KEYS like
    any encrypted log (its log key is random and kept in KEYS, wrapped under ``KEK``), so
    KEYS is in every crash image and every reopen unwraps it."""
    parts = set(cfg.coding.split("+")) - {""}
    options: dict[str, object] = {}
    if "zstd" in parts:
        options["compression"] = "zstd"
    if "encrypted" in parts:
        options["encryption_key"] = KEK
    if "prealloc" in parts:
        options["preallocate"] = True
    if "direct" in parts:
        options["direct_io"] = True
    if "zstd-dict" in parts:
        from dictlib import trained

        options["compression"] = "zstd"
        options["compression_dictionary"] = trained()
    return options


def _open_with(path: str, options: dict[str, object], **kw: object) -> segwal.Wal:
    """segwal.open, or a Wal with a key ring (segwal.open takes keys as encryption options)."""
    if "keys" not in options:
        return segwal.open(path, **options, **kw)  # type: ignore[arg-type]
    from segwal.log.config import WalConfig

    return segwal.Wal(path, WalConfig(**options, **kw))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Policy:
    """How many crash images to draw at each operation index, and how hard to check them."""

    exhaustive_limit: int = 10  # every subset of at most this many pending units
    random_subsets: int = 32
    fills: tuple[str, ...] = FILLS
    full_every: int = 4  # append and open again for 1 in N images recovery did not repair
    recovery_crashes: bool = True  # crash inside recoveries that changed the disk
    kills: bool = True  # process kill, reopen, then power loss, at the end of each step
    recovery: str = "tolerate_tail"  # the checker's recovery mode
    tolerate_known: bool = True  # count kill scenarios that hit a KNOWN_BUGS entry
    seed: int = 0


# -- payloads and clocks ----------------------------------------------------------------------


def payload(n: int, size: int) -> bytes:
    """The payload of the ``n``-th append of a workload: unique, deterministic, any size."""
    stem = b"<%d>" % n
    pad = hashlib.blake2b(n.to_bytes(8, "little"), digest_size=32).digest()
    return (stem + pad * (size // 32 + 1))[:size]


def single_size(n: int) -> int:
    return 24 + (n * 37) % 40


def batch_size(n: int) -> int:
    return 90 + (n * 53) % 90


def big_size(n: int) -> int:
    return 700 + (n * 97) % 600


class Clock:
    """Microseconds that tick by one per call: deterministic timestamps."""

    def __init__(self, start: int = T0) -> None:
        self.now = start

    def __call__(self) -> int:
        self.now += 1
        return self.now


_INTERNED: dict[bytes, bytes] = {}


def _intern(data: bytes) -> bytes:
    # Recovered payloads repeat across images: keep one copy of each.
    return _INTERNED.setdefault(data, data)


# -- the logical log --------------------------------------------------------------------------

Holds = tuple[tuple[str, int], ...]  # holds, then cursors as ("cursor:name", position)
State = tuple[int, tuple[bytes, ...], Holds]  # first LSN, payloads from it, holds


@dataclass(frozen=True, slots=True)
class Snap:
    """The log's logical content after a step: LSNs ``first..last``, the payload of every
    LSN from 1 (below ``first`` too, for slicing), the LSNs that end a batch, the holds."""

    first: int
    last: int
    payloads: tuple[bytes, ...]
    ends: frozenset[int]
    holds: Holds

    def allows(self, first: int, got: tuple[bytes, ...], holds: Holds, max_first: int = 0) -> bool:
        """Whether ``got`` (LSNs ``first..``) is a batch-aligned prefix of this content,
        starting at its first LSN or, while a step moving the first LSN runs, anywhere up
        to ``max_first`` (records below a checkpoint being taken may go in any order)."""
        m = first + len(got) - 1
        if not self.first <= first <= max(self.first, max_first):
            return False
        if m > self.last or holds != self.holds:
            return False
        if got and m not in self.ends:
            return False
        return self.payloads[first - 1 : m] == got

    def state(self) -> State:
        return self.first, self.payloads[self.first - 1 :], self.holds


@dataclass(slots=True)
class Model:
    """What the workload appended, tracked from the API's answers."""

    payloads: list[bytes] = field(default_factory=list)
    ends: set[int] = field(default_factory=set)
    count: int = 0  # appends so far (names the next payload)

    def copy(self) -> Model:
        return Model(list(self.payloads), set(self.ends), self.count)

    @property
    def last(self) -> int:
        return len(self.payloads)

    def take(self, sizes: Callable[[int], int], n: int) -> list[bytes]:
        out = []
        for _ in range(n):
            self.count += 1
            out.append(payload(self.count, sizes(self.count)))
        return out

    def snap(self, first: int, holds: Holds) -> Snap:
        return Snap(first, self.last, tuple(self.payloads), frozenset(self.ends), holds)


@dataclass(frozen=True, slots=True)
class Expect:
    """What recovering one crash image may give (see the module docstring)."""

    window: tuple[Snap, ...]  # the allowed logical states, newest first
    lo: int  # acknowledged records lo..hi must be present
    hi: int
    where: str  # for messages: the step the crash interrupted

    def problem(self, state: State) -> str | None:
        first, got, holds = state
        m = first + len(got) - 1
        if self.lo <= self.hi and not (first <= self.lo and m >= self.hi):
            return f"acknowledged LSNs {self.lo}..{self.hi} must survive, recovered {first}..{m}"
        top = max(s.first for s in self.window)
        if any(s.allows(first, got, holds, top) for s in self.window):
            return None
        return f"recovered LSNs {first}..{m} (holds {dict(holds)}) match no allowed state: " + (
            " ".join(_difference(first, got, holds, s) for s in self.window)
        )


def _difference(first: int, got: tuple[bytes, ...], holds: Holds, s: Snap) -> str:
    m = first + len(got) - 1
    head = f"[{s.first}..{s.last}"
    if first < s.first:
        return f"{head}: first LSN differs]"
    if m > s.last:
        return f"{head}: more records]"
    bad = next((first + i for i, p in enumerate(got) if s.payloads[first - 1 + i] != p), None)
    if bad is not None:
        return f"{head}: LSN {bad} differs]"
    if holds != s.holds:
        return f"{head}: holds {dict(s.holds)}]"
    return f"{head}: LSN {m} ends inside a batch]"


# -- workloads ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spec:
    """A workload: sync mode, starting log, steps (name, parameter in [0, 1) or None for the
    fixed choice); ``focus`` limits the crash points to one step (0 is the opening)."""

    mode: str
    base: str
    steps: tuple[tuple[str, float | None], ...]
    focus: int | None = None

    def label(self) -> str:
        names = [n if a is None else f"{n}({a:.3f})" for n, a in self.steps]
        text = f"{self.mode}/{self.base}: open, {', '.join(names) or '-'}"
        return text if self.focus is None else f"{text} [crashing in step {self.focus + 1}]"


DELETE_CURSOR = 0.8  # a cursor step with a larger parameter deletes the cursor


def _pick(arg: float | None, low: int, high: int, fixed: int) -> int:
    """An integer in low..high: from ``arg`` in [0, 1), or ``fixed`` (clamped)."""
    if high < low:
        return low
    if arg is None:
        return min(max(fixed, low), high)
    return min(high, low + int(arg * (high - low + 1)))


class Runner:
    """Runs one workload and keeps what the checker needs: snapshots, acknowledgements."""

    def __init__(self, spec: Spec, fs: MemoryFileSystem, model: Model, clock: Clock) -> None:
        self.spec = spec
        self.fs = fs
        self.model = model
        self.clock = clock
        self.config = BASES[spec.base]
        self.snaps: list[Snap] = []
        self.acks: list[int] = []
        self.floors: list[int] = []

    def open(self, *, retention: bool = True) -> segwal.Wal:
        cfg = self.config
        return _open_with(
            PATH,
            coding_options(cfg),
            filesystem=self.fs,
            clock=self.clock,
            sync=self.spec.mode,  # type: ignore[arg-type]
            sync_interval=3600.0,  # the flusher never fires: every run is deterministic
            segment_bytes=cfg.segment_bytes,
            max_record_bytes=4096,
            retention_max_bytes=cfg.retention_max_bytes if retention else None,
        )

    def record(self, start: Snap) -> None:
        fs = self.fs
        self.snaps.append(start)
        self.acks.append(start.last)
        self.floors.append(0)
        wal: segwal.Wal | None = None
        try:
            for j, (name, arg) in enumerate([("open", None), *self.spec.steps], 1):
                fs.note("op", j)
                if name == "open":
                    wal = self.open()
                else:
                    assert wal is not None
                    wal = self.step(wal, name, arg)
                self.after(j, name, wal)
                # Step j returned; every record up to this LSN is acknowledged (the payloads
                # are in self.snaps[j]).
                fs.mark_ack((j, self.acks[j]))
        finally:
            if wal is not None:
                wal.close()

    def after(self, j: int, name: str, wal: segwal.Wal) -> None:
        model = self.model
        if wal.last_lsn != model.last:
            raise AssertionError(f"step {j} {name}: last LSN {wal.last_lsn}, model {model.last}")
        durable = wal.durable_lsn
        promised = self.promised(name)
        if durable < promised:
            raise Violation(
                f"{self.spec.label()}: step {j} ({name}) returned with durable LSN {durable}, "
                f"but returning acknowledges every record up to {promised}"
            )
        prev = self.snaps[-1]
        snap = model.snap(wal.first_lsn, holds_of(wal))
        # A step that moved the first LSN, dropped records or changed a hold did so durably
        # before it returned: no crash after it may give an older state.
        changed = (
            snap.first > prev.first
            or snap.payloads[: prev.last] != prev.payloads
            or snap.holds != prev.holds
        )
        self.snaps.append(snap)
        self.acks.append(durable)
        self.floors.append(j if changed else self.floors[-1])

    def promised(self, name: str) -> int:
        """The LSN the API promises durable when step ``name`` returns."""
        if name in ("open", "sync", "rotate", "reopen"):
            return self.model.last
        if name in ("append", "batch", "big") and self.spec.mode == "always":
            return self.model.last
        return 0

    def step(self, wal: segwal.Wal, name: str, arg: float | None) -> segwal.Wal:
        model = self.model
        first, last = wal.first_lsn, wal.last_lsn
        if name in ("append", "big"):
            (p,) = model.take(single_size if name == "append" else big_size, 1)
            lsn = wal.append(p)
            assert lsn == last + 1, (lsn, last)
            model.payloads.append(p)
            model.ends.add(lsn)
        elif name == "batch":
            ps = model.take(batch_size, 3)
            got = wal.append_batch(ps)
            assert got == range(last + 1, last + 4), (got, last)
            model.payloads.extend(ps)
            model.ends.add(got[-1])
        elif name == "rotate":
            wal.rotate()
        elif name == "sync":
            wal.sync()
        elif name == "reopen":
            wal.close()
            wal = self.open()
        elif name == "trunc_before":
            lsn = _pick(arg, first, last + 1, last - 1)
            with contextlib.suppress(HoldError):  # checked before any I/O: nothing happened
                wal.truncate_before(lsn)
        elif name in ("trunc_after", "rewind_seg"):
            if name == "rewind_seg":
                sealed = [s.last_lsn for s in wal.segments() if s.sealed]
                lsn = _pick(None, first - 1, last, sealed[-1] if sealed else last - 1)
            else:
                lsn = _pick(arg, first - 1, last, last - 2)
            wal.truncate_after(lsn)
            if lsn < last:
                del model.payloads[lsn:]
                model.ends = {e for e in model.ends if e < lsn}
                if lsn >= 1:
                    model.ends.add(lsn)  # a batch cut in two keeps its first part whole
        elif name == "retention":
            # A live reader pins the segments, so retention defers removing their files
            # until the reader has moved past them (site retention.deferred).
            reader = wal.replay()
            next(reader, None)
            wal.apply_retention()
            for _ in reader:
                pass
        elif name == "prune":
            wal.prune_through(self.clock.now - int((0.5 if arg is None else arg) * 60))
        elif name == "cursor":
            # One durable change per step: create the consumer cursor, commit it, or
            # delete it.
            if "c" not in wal.cursors():
                wal.cursor("c", start=_pick(arg, first, last + 1, first))
            elif arg is not None and arg > DELETE_CURSOR:
                wal.cursor("c").delete()
            else:
                wal.cursor("c").commit(_pick(arg, first - 1, last, last))
        elif name == "hold":
            if wal.holds():
                wal.release("h")
            else:
                wal.hold("h", _pick(arg, first, last + 1, (first + last) // 2))
        else:
            raise ValueError(f"unknown step {name!r}")
        return wal

    def expect(self, j: int, done: bool, *, killed: bool = False) -> Expect:
        """The expectations for a crash inside step ``j`` (or right after it, when done).
        With ``killed`` (a process kill: the page cache survives) every record written
        must be there, not only the acknowledged ones."""
        snaps, acks, floors = self.snaps, self.acks, self.floors
        if done:
            now = snaps[j]
            window = tuple(snaps[t] for t in range(j, floors[j] - 1, -1))
            hi = now.last if killed else min(acks[j], now.last)
            return Expect(window, now.first, hi, f"after step {j}")
        before, after = snaps[j - 1], snaps[j]
        window = tuple(snaps[t] for t in range(j, floors[j - 1] - 1, -1))
        lo = max(before.first, after.first)
        hi = min(before.last if killed else acks[j - 1], before.last, after.last)
        if after.payloads[: before.last] != before.payloads[: after.last]:
            hi = min(hi, after.last)  # a rewind: only what it keeps must stay
        return Expect(window, lo, hi, f"during step {j}")


# -- starting logs ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Base:
    image: MemoryFileSystem | None  # None: a file system without the log
    model: Model
    clock: int
    first: int = 1


_BASES: dict[str, Base] = {}


def base(name: str) -> Base:
    """The starting log ``name``, built once per process: a closed log, all durable."""
    if name in _BASES:
        return _BASES[name]
    cfg = BASES[name]
    if cfg.prefill < 0:
        made = Base(None, Model(), T0)
    else:
        fs = MemoryFileSystem()
        clock = Clock(T0)
        model = Model()
        runner = Runner(Spec("always", name, ()), fs, model, clock)
        # Without retention, so that the workloads' retention has something to delete.
        with runner.open(retention=False) as wal:
            i = 0
            while model.count < cfg.prefill:
                runner.step(wal, "batch" if i % 3 == 2 else "append", None)
                i += 1
            first = wal.first_lsn
        made = Base(fs.snapshot(), model, clock.now, first)
    _BASES[name] = made
    return made


# -- stripping LOCK --------------------------------------------------------------------------


def strip_lock(fs: MemoryFileSystem, stop: int | None = None) -> MemoryFileSystem:
    """``fs``'s op log (up to ``stop``) re-executed from its starting state, without LOCK.

    Every other operation is repeated through the public seam by path: segwal writes,
    truncates and syncs a file only while it has the name it was opened by, so the path
    names the file the operation was recorded on. A skipped barrier is left out (it changed
    nothing).
    """
    out = fs.replay(0)
    out.skip_sync_sites = set()
    for op in fs.ops[:stop]:
        kind = op.kind
        if op.error is not None:
            raise AssertionError(f"cannot re-execute a failed operation: {op}")
        if kind == "lock" or op.path == LOCK_PATH:
            continue
        if kind == "note":
            out.note(op.label, op.value)
        elif kind == "write":
            h = out.open_write(op.path)
            h.pwrite(op.data, op.offset)
            h.close()
        elif kind == "sync":
            if not op.skipped:
                h = out.open_read(op.path)
                h.sync(op.site)
                h.close()
        elif kind == "sync_dir":
            if not op.skipped:
                out.sync_dir(op.path, op.site)
        elif kind == "create":
            out.create(op.path).close()
        elif kind == "rename":
            out.rename(op.path, op.target)
        elif kind == "unlink":
            out.unlink(op.path)
        elif kind == "truncate":
            h = out.open_write(op.path)
            h.truncate(op.length)
            h.close()
        elif kind == "allocate":
            h = out.open_write(op.path)
            h.allocate(op.offset, op.length)
            h.close()
        elif kind == "mkdir":
            # make_dir fsyncs the parent itself; the recorded sync_dir follows as its own op.
            out.skip_sync_sites.add("make_dir")
            out.make_dir(op.path)
            out.skip_sync_sites.discard("make_dir")
        else:
            raise AssertionError(f"unknown operation {op}")
    return out


# -- recovering one image ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """What recovering one image gave."""

    state: State
    error: str | None = None  # a broken promise whatever the expectations
    log: MemoryFileSystem | None = None  # recovery's operations and an append, LOCK stripped


def image_key(image: MemoryFileSystem) -> bytes:
    """A fingerprint of every name and content, LOCK aside."""
    h = hashlib.blake2b(digest_size=16)
    for path, content in sorted(image.tree().items()):
        if path == LOCK_PATH:
            continue
        h.update(path.encode())
        h.update(b"\0D\n" if content is None else b"\0F%d\n" % len(content))
        if content:
            h.update(content)
    return h.digest()


_MUTATIONS = frozenset({"create", "write", "truncate", "rename", "unlink", "mkdir"})


class Checker:
    """Opens images as a user would after the crash (fresh clock, no retention)."""

    def __init__(self, policy: Policy, skip: frozenset[str]) -> None:
        self.policy = policy
        self.skip = skip
        self.calls: Counter[str] = Counter()  # barrier calls by site during recoveries
        self.options: dict[str, object] = {}  # the coding of the spec being checked

    def open(self, image: MemoryFileSystem, segment_bytes: int) -> segwal.Wal:
        image.skip_sync_sites = set(self.skip)  # the library as built, without those barriers
        return _open_with(
            PATH,
            self.options,
            filesystem=image,
            recovery=self.policy.recovery,  # type: ignore[arg-type]
            sync="always",
            segment_bytes=segment_bytes,
            max_record_bytes=4096,
            clock=Clock(CHECK_T0),
        )

    @staticmethod
    def read(wal: segwal.Wal) -> tuple[State, str | None]:
        first, last = wal.first_lsn, wal.last_lsn
        records = list(wal.replay())
        state = (first, tuple(_intern(r.payload) for r in records), holds_of(wal))
        lsns = [r.lsn for r in records]
        if lsns != list(range(first, last + 1)):
            return state, f"replay gave LSNs {lsns[:3]}..{lsns[-3:]}, not {first}..{last}"
        if wal.durable_lsn != last:
            return state, f"durable LSN {wal.durable_lsn} after open, last LSN {last}"
        return state, None

    def recover(self, image: MemoryFileSystem, segment_bytes: int, full: bool) -> Outcome:
        """Open ``image`` and read it back. When recovery changed the disk, append a record
        and keep the operations for crashing inside them; otherwise, with ``full``, append
        and check that a second open agrees. ``image`` is used up."""
        nothing: State = (0, (), ())
        try:
            wal = self.open(image, segment_bytes)
        except Exception as exc:  # whatever it is, the open must not raise
            return Outcome(nothing, f"open raised {type(exc).__name__}: {exc}")
        repaired = any(op.kind in _MUTATIONS and op.path != LOCK_PATH for op in image.ops)
        self.calls.update(image.sync_counts)
        try:
            state, error = self.read(wal)
            if error is not None or not (full or repaired):
                return Outcome(state, error)
            first, got, _ = state
            image.note("opened")
            lsn = wal.append(EXTRA)
            image.note("appended")
            if lsn != first + len(got):
                return Outcome(state, f"a new append got LSN {lsn}, not {first + len(got)}")
        except Exception as exc:
            return Outcome(nothing, f"reading or appending raised {type(exc).__name__}: {exc}")
        finally:
            wal.close()
        if repaired:
            # The last crash point of this log, everything durable, is the second open.
            return Outcome(state, None, strip_lock(image, image.op_count))
        try:
            with self.open(image, segment_bytes) as again:
                state2, error = self.read(again)
        except Exception as exc:
            return Outcome(state, f"second open raised {type(exc).__name__}: {exc}")
        if error is None and state2 != with_extra(state):
            error = f"second open gave LSNs {span(state2)}, not {span(with_extra(state))}"
        return Outcome(state, error)


def holds_of(wal: segwal.Wal) -> Holds:
    """The holds and the consumer cursors, which must survive like records."""
    cursors = wal.cursors() if hasattr(wal, "cursors") else {}
    items = [*wal.holds().items(), *((f"cursor:{n}", p) for n, p in cursors.items())]
    return tuple(sorted(items))


def with_extra(state: State) -> State:
    return state[0], (*state[1], EXTRA), state[2]


def span(state: State) -> str:
    return f"{state[0]}..{state[0] + len(state[1]) - 1}"


# -- the enumeration ---------------------------------------------------------------------------


class Violation(AssertionError):
    """A crash state whose recovery breaks the promise."""


@dataclass
class Totals:
    """What an enumeration covered."""

    states: int = 0  # distinct images recovered: the number that is published
    recovery_states: int = 0  # of which, crash states inside a recovery
    kill_states: int = 0  # of which, power loss after a process kill and reopen
    full_checks: int = 0  # images appended to and opened twice
    kills: int = 0  # process kills, each followed by a reopen crashed at every operation
    same_as_before: int = 0  # workloads identical to one enumerated before (not again)
    images: int = 0  # images looked at, duplicates included
    crash_points: int = 0  # operation indices crashed at
    workloads: int = 0
    seconds: float = 0.0  # summed over processes
    seeds: set[int] = field(default_factory=set)
    known: dict[str, int] = field(default_factory=dict)  # KNOWN_BUGS hits, by name

    _SUMS = (
        "states",
        "recovery_states",
        "kill_states",
        "full_checks",
        "kills",
        "same_as_before",
        "images",
        "crash_points",
        "workloads",
        "seconds",
    )

    def add(self, other: Totals) -> None:
        for name in self._SUMS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.seeds |= other.seeds
        for bug, count in other.known.items():
            self.known[bug] = self.known.get(bug, 0) + count

    def line(self) -> str:
        known = "".join(f"; known bug {b!r} hit {n} times" for b, n in sorted(self.known.items()))
        return (
            f"{self.states} crash states ({self.recovery_states} inside recovery, "
            f"{self.kill_states} after {self.kills} kills; {self.full_checks} opened twice) from "
            f"{self.images} images at {self.crash_points} crash points of {self.workloads} "
            f"workloads ({self.same_as_before} identical to one before), "
            f"{self.seconds:.1f} s of CPU{known}"
        )


Point = tuple[int, MemoryFileSystem | None, Op | None]


class Enumerator:
    """Checks the crash states of workloads, remembering every image it recovered."""

    def __init__(self, policy: Policy | None = None, *, skip: Iterable[str] = ()) -> None:
        self.policy = policy or Policy()
        self.skip = frozenset(skip)
        self.checker = Checker(self.policy, self.skip)
        self.outcomes: dict[bytes, State] = {}
        self.errors: dict[bytes, str] = {}  # images whose recovery broke the promise
        self.new_keys: list[bytes] = []
        self.recoveries: set[tuple[Any, ...]] = set()
        self.recordings: set[bytes] = set()
        # Images recovery repaired, first met where their recovery was not crashed inside
        # (after a kill, inside another recovery): crashed inside when a workload meets them.
        self.uncrashed: set[bytes] = set()
        self.totals = Totals(seeds={self.policy.seed})
        self.calls = self.checker.calls  # barrier calls by site, workloads and recoveries

    # -- workloads --

    def record(self, spec: Spec) -> Runner:
        start = base(spec.base)
        fs = start.image.fork() if start.image is not None else MemoryFileSystem()
        fs.skip_sync_sites = set(self.skip)
        runner = Runner(spec, fs, start.model.copy(), Clock(start.clock))
        try:
            runner.record(start.model.snap(start.first, ()))
        finally:
            self.calls.update(fs.sync_counts)
        return runner

    def run(self, spec: Spec) -> None:
        """Record ``spec`` and check its crash states; raise :class:`Violation` at the first
        broken promise."""
        began = time.process_time()
        logger = logging.getLogger("segwal")
        disabled, logger.disabled = logger.disabled, True  # a warning per torn tail is slow
        try:
            self._run(spec)
        finally:
            logger.disabled = disabled
            self.totals.workloads += 1
            self.totals.seconds += time.process_time() - began

    def _run(self, spec: Spec) -> None:
        runner = self.record(spec)
        log = strip_lock(runner.fs)
        # A workload whose operations and expectations equal one already enumerated would
        # give the same results: with the flusher never firing, "interval" does exactly
        # what "never" does, operation for operation.
        same = _recording_key(log, runner, spec.focus)
        if same in self.recordings:
            self.totals.same_as_before += 1
            return
        self.recordings.add(same)
        segment_bytes = BASES[spec.base].segment_bytes
        self.checker.options = coding_options(BASES[spec.base])
        seed = self.policy.seed * 1_000_003 + _hash(repr((spec.base, spec.steps, spec.focus)))
        focus = None if spec.focus is None else spec.focus + 1  # step 1 is the opening
        step, done = 0, True
        seen: list[tuple[State, str]] | None = None  # outcomes at the last crash point
        for k, state, op in self._points(log):
            if op is not None and op.kind == "note":
                if op.label == "op":
                    step, done = int(op.value), False  # type: ignore[call-overload]
                    if focus is not None and step > focus:
                        return
                elif op.label == "ack" and (focus is None or step == focus):
                    # The disk of the step's last operation; now that the step has returned,
                    # what it acknowledged must be there too.
                    done = True
                    expect = runner.expect(step, done)
                    where = f"{spec.label()}; crash right after step {step} returned"
                    if seen is None:  # the last operation was a barrier not crashed at
                        seen = self._check_all(state, seed + k, expect, segment_bytes, where)
                    for got, info in seen:
                        self._verify(got, expect, f"{where}, {info}")
                    if self.policy.kills:
                        self.kill(runner, log, k, step, segment_bytes, seed + k)
                continue
            if step == 0 or (focus is not None and step != focus):
                continue
            if (
                self.policy.kills
                and op is not None
                and op.kind in _MUTATIONS
                and k < len(log.ops)
                and log.ops[k].kind in ("sync", "sync_dir")
            ):
                # Killed just before a barrier: the most the page cache can hold alone.
                self.kill(runner, log, k, step, segment_bytes, seed + k, done=False)
            if state is None:
                seen = None
                continue
            expect = runner.expect(step, done)
            where = f"{spec.label()}; crash {_op_text(log.ops, k)}, {expect.where}"
            seen = self._check_all(state, seed + k, expect, segment_bytes, where)

    def _points(self, log: MemoryFileSystem, start: int = 0) -> Iterator[Point]:
        """(k, state, op) for every operation index from ``start``. For a note, state is the
        (unchanged) state; otherwise it is None where crashing could give no image that the
        previous point did not: after a skipped barrier, and after a barrier whose previous
        point drew every subset of its pending units (the images after a barrier are those
        before it in which the synced units persisted)."""
        ops = log.ops
        limit = self.policy.exhaustive_limit
        prev_units: int | None = None
        for k, state in log.replays():
            if k <= start:
                continue
            op = ops[k - 1]
            if op.kind == "note":
                yield k, state, op
                continue
            if op.kind in ("sync", "sync_dir") and (
                op.skipped or (prev_units is not None and prev_units <= limit)
            ):
                yield k, None, op
                continue
            prev_units = state.pending_units()
            yield k, state, op

    def _images(self, state: MemoryFileSystem, seed: int) -> list[MemoryFileSystem]:
        policy = self.policy
        self.totals.crash_points += 1
        return state.crash_states(
            seed=seed,
            random_subsets=policy.random_subsets,
            exhaustive_limit=policy.exhaustive_limit,
            fills=policy.fills,
        )

    def _check_all(
        self,
        state: MemoryFileSystem | None,
        seed: int,
        expect: Expect,
        segment_bytes: int,
        where: str,
    ) -> list[tuple[State, str]]:
        assert state is not None
        out = []
        for image in self._images(state, seed):
            info = f"image {image.crash_info}"
            got = self._outcome(image, segment_bytes, f"{where}, {info}", "workload")
            self._verify(got, expect, f"{where}, {info}")
            out.append((got, info))
        return out

    @staticmethod
    def _verify(got: State, expect: Expect, where: str) -> None:
        problem = expect.problem(got)
        if problem is not None:
            raise Violation(f"{where}: {problem}")

    def _outcome(self, image: MemoryFileSystem, segment_bytes: int, where: str, kind: str) -> State:
        """The recovered state of ``image``, recovering it when it is new (and crashing inside
        that recovery when it changed the disk in a way not crashed inside before)."""
        self.totals.images += 1
        key = image_key(image)
        known = self.outcomes.get(key)
        if known is not None:
            if kind == "workload" and key in self.uncrashed and self.policy.recovery_crashes:
                self.uncrashed.discard(key)
                again = self.checker.recover(image, segment_bytes, False)
                if again.log is not None:
                    self._crash_once(known, again.log, segment_bytes, where)
            return known
        if key in self.errors:  # met before inside a tolerated known bug: still broken
            raise Violation(f"{where}: {self.errors[key]}")
        full = kind == "workload" and key[0] % max(1, self.policy.full_every) == 0
        outcome = self.checker.recover(image, segment_bytes, full)
        if outcome.error is None:
            self.outcomes[key] = outcome.state
        else:
            self.errors[key] = outcome.error
        self.new_keys.append(key)
        totals = self.totals
        totals.states += 1
        totals.recovery_states += kind == "recovery"
        totals.kill_states += kind == "kill"
        totals.full_checks += full or outcome.log is not None
        if outcome.error is not None:
            raise Violation(f"{where}: {outcome.error}")
        log = outcome.log
        if log is not None and self.policy.recovery_crashes:
            if kind == "workload":
                self._crash_once(outcome.state, log, segment_bytes, where)
            else:
                self.uncrashed.add(key)
        return outcome.state

    def _crash_once(
        self, state: State, log: MemoryFileSystem, segment_bytes: int, where: str
    ) -> None:
        # Images whose recoveries do the same operations (the same cut of tails torn in
        # different ways, say) are crashed inside once.
        signature = tuple(
            (op.kind, op.path, op.offset, op.length, op.target, op.site) for op in log.ops
        )
        if signature not in self.recoveries:
            self.recoveries.add(signature)
            where = where.replace(", image ", ", recovering image ", 1)
            self.crash_recovery(state, log, segment_bytes, where)

    # -- crashing again --

    def crash_recovery(
        self, parent: State, log: MemoryFileSystem, segment_bytes: int, where: str
    ) -> None:
        """Crash at every operation of a recovery and of the first append after it: the
        result must be what the uninterrupted recovery gave (with the new record, once its
        append has started; surely, once it returned)."""
        allowed = {parent}
        seed = self.policy.seed + len(parent[1])
        for k, state, op in self._points(log):
            if op is not None and op.kind == "note":
                if op.label == "opened":
                    allowed = {parent, with_extra(parent)}
                elif op.label == "appended":
                    # The append returned, so the record must be there; at this last point,
                    # everything durable, recovering is the second open.
                    here = f"{where}; recovered, appended, then crashed"
                    self._again(state, seed + k, {with_extra(parent)}, segment_bytes, here, "")
                    return
                continue
            if state is not None:
                here = f"{where}; crash during its recovery {_op_text(log.ops, k)}"
                self._again(state, seed + k, allowed, segment_bytes, here, "recovery")
        raise AssertionError("the recovery log has no 'appended' note")

    def kill(
        self,
        runner: Runner,
        log: MemoryFileSystem,
        k: int,
        step: int,
        segment_bytes: int,
        seed: int,
        *,
        done: bool = True,
    ) -> None:
        """The process dies at ``log``'s operation ``k`` (inside step ``step``, or right after
        it when ``done``) and the page cache survives: the reopened log must hold every
        record written, then a power loss at any point of that reopen and of its first
        append must keep what the reopen counted as durable."""
        self.totals.kills += 1
        try:
            self._kill(runner, log, k, step, segment_bytes, seed, done)
        except Violation as exc:
            bug = known_bug(str(exc)) if self.policy.tolerate_known else None
            if bug is None:
                raise
            self.totals.known[bug] = self.totals.known.get(bug, 0) + 1

    def _kill(
        self,
        runner: Runner,
        log: MemoryFileSystem,
        k: int,
        step: int,
        segment_bytes: int,
        seed: int,
        done: bool,
    ) -> None:
        live = log.replay(k)  # the live state: pending writes still in the page cache
        live.note("killed")
        expect = runner.expect(step, done)
        written = runner.expect(step, done, killed=True)
        when = (
            f"right after step {step} returned"
            if done
            else f"{_op_text(log.ops, k)}, {expect.where}"
        )
        where = f"{runner.spec.label()}; process killed {when}, reopened"
        try:
            wal = self.checker.open(live, segment_bytes)
        except Exception as exc:
            raise Violation(f"{where}: open raised {type(exc).__name__}: {exc}") from exc
        try:
            want, error = self.checker.read(wal)
            if error is None:
                problem = written.problem(want)
                if problem is not None:
                    error = f"the kill lost written records: {problem}"
            if error is not None:
                raise Violation(f"{where}: {error}")
            live.note("opened")
            wal.append(EXTRA)
            live.note("appended")
        finally:
            wal.close()
        kill_log = strip_lock(live)
        start = next(op.index for op in kill_log.ops if op.kind == "note" and op.label == "killed")
        allowed: set[State] | None = None
        for i, state, op in self._points(kill_log, start):
            if op is not None and op.kind == "note":
                if op.label == "opened":
                    allowed = {want, with_extra(want)}
                elif op.label == "appended":
                    here = f"{where}, appended, then power lost"
                    self._again(state, seed + i, {with_extra(want)}, segment_bytes, here, "kill")
                    return
                continue
            if state is None:
                continue
            here = f"{where}; power lost {_op_text(kill_log.ops, i)}"
            if allowed is None:  # still inside the reopen: what the step left is the bar
                self._check_all_kind(state, seed + i, expect, segment_bytes, here)
            else:
                self._again(state, seed + i, allowed, segment_bytes, here, "kill")
        raise AssertionError("the kill log has no 'appended' note")

    def _check_all_kind(
        self, state: MemoryFileSystem, seed: int, expect: Expect, segment_bytes: int, where: str
    ) -> None:
        for image in self._images(state, seed):
            info = f"image {image.crash_info}"
            got = self._outcome(image, segment_bytes, f"{where}, {info}", "kill")
            self._verify(got, expect, f"{where}, {info}")

    def _again(
        self,
        state: MemoryFileSystem | None,
        seed: int,
        allowed: set[State],
        segment_bytes: int,
        where: str,
        kind: str,
    ) -> None:
        assert state is not None
        for image in self._images(state, seed):
            info = f"image {image.crash_info}"
            got = self._outcome(image, segment_bytes, f"{where}, {info}", kind or "recovery")
            if got not in allowed:
                expected = " or ".join(sorted(span(a) for a in allowed))
                raise Violation(f"{where}, {info}: recovered LSNs {span(got)}, expected {expected}")


def _recording_key(log: MemoryFileSystem, runner: Runner, focus: int | None) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for op in log.ops:
        h.update(
            repr((op.kind, op.path, op.offset, op.target, op.site, op.label, op.value)).encode()
        )
        h.update(op.data)
    h.update(repr((runner.acks, runner.floors, focus)).encode())
    for snap in runner.snaps:
        h.update(repr((snap.first, snap.last, sorted(snap.ends), snap.holds)).encode())
        h.update(b"".join(snap.payloads))
    return h.digest()


def _op_text(ops: Sequence[Op], k: int) -> str:
    op = ops[k - 1]
    text = f"after operation {k} ({op.kind} {op.path}"
    if op.kind == "write":
        text += f" [{op.offset}, {op.offset + op.length})"
    if op.kind == "truncate":
        text += f" to {op.length}"
    if op.site:
        text += f" at {op.site}"
    if op.target:
        text += f" -> {op.target}"
    return text + ")"


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "big")


# -- workload sets ----------------------------------------------------------------------------


def creation_specs(modes: Sequence[str] = MODES) -> list[Spec]:
    """Opening a directory that does not exist yet, then appends and a rotation."""
    steps = (("append", None), ("batch", None), ("rotate", None), ("append", None))
    return [Spec(mode, "new", steps) for mode in modes]


def exhaustive_specs(
    modes: Sequence[str] = MODES,
    bases: Sequence[str] = ("empty", "full"),
    depth: int = 3,
    alphabet: Sequence[str] = OPS,
    first: Sequence[str] | None = None,
) -> list[Spec]:
    """Every sequence of up to ``depth`` steps (starting with one of ``first``, when given),
    each workload focused on its last step: together they crash at every operation of
    every sequence, a shared prefix once. The modes of one sequence are adjacent, so a
    process that checks them can tell identical recordings apart."""
    out: list[Spec] = []
    for name in bases:
        if first is None or alphabet[0] in first:
            out.extend(Spec(mode, name, (), focus=0) for mode in modes)
        frontier: list[tuple[tuple[str, float | None], ...]] = [()]
        for d in range(1, depth + 1):
            frontier = [(*s, (op, None)) for s in frontier for op in alphabet]
            for steps in frontier:
                if first is None or steps[0][0] in first:
                    out.extend(Spec(mode, name, steps, focus=d) for mode in modes)
    return out


def random_specs(
    seed: int, count: int, modes: Sequence[str] = MODES, length: tuple[int, int] = (10, 30)
) -> list[Spec]:
    """Seeded random workloads of ``length`` steps with random parameters."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        steps = tuple(
            (rng.choices(RANDOM_OPS, RANDOM_WEIGHTS)[0], round(rng.random(), 3))
            for _ in range(rng.randint(*length))
        )
        out.append(Spec(modes[i % len(modes)], rng.choice(("empty", "full", "full")), steps))
    return out


# -- running many workloads, in several processes --------------------------------------------


@dataclass
class Report:
    """The result of checking a list of workloads."""

    totals: Totals
    keys: set[bytes]
    violation: str | None = None
    failed_spec: Spec | None = None
    wall: float = 0.0

    @property
    def distinct(self) -> int:
        return len(self.keys)


# Per process: one enumerator per (policy, skipped sites); enumerators whose recoveries
# behave alike (same recovery mode and skipped sites) share what they have recovered.
_WORKERS: dict[tuple[Policy, frozenset[str]], Enumerator] = {}


def _enumerator(policy: Policy, skip: frozenset[str]) -> Enumerator:
    found = _WORKERS.get((policy, skip))
    if found is None:
        found = Enumerator(policy, skip=skip)
        for (other, other_skip), twin in _WORKERS.items():
            if other.recovery == policy.recovery and other_skip == skip:
                found.outcomes, found.errors = twin.outcomes, twin.errors
                found.recoveries, found.recordings = twin.recoveries, twin.recordings
                found.uncrashed = twin.uncrashed
                break
        _WORKERS[policy, skip] = found
    return found


Job = tuple[Policy, frozenset[str], list[Spec]]
Result = tuple[Totals, list[bytes], str | None, Spec | None]


def _work(job: Job) -> Result:
    policy, skip, chunk = job
    worker = _enumerator(policy, skip)
    before = Totals()
    before.add(worker.totals)
    violation = failed = None
    for spec in chunk:
        try:
            worker.run(spec)
        except Violation as exc:
            violation, failed = str(exc), spec
            break
        except Exception:
            violation, failed = f"{spec.label()}: harness error\n{traceback.format_exc()}", spec
            break
    keys, worker.new_keys = worker.new_keys, []
    done = Totals(seeds=set(worker.totals.seeds))
    for name in Totals._SUMS:
        setattr(done, name, getattr(worker.totals, name) - getattr(before, name))
    done.known = {
        b: n - before.known.get(b, 0)
        for b, n in worker.totals.known.items()
        if n > before.known.get(b, 0)
    }
    return done, keys, violation, failed


def make_pool(procs: int | None = None) -> Any:
    """A pool of forked worker processes (the starting logs are built first, so every
    process shares them)."""
    for name in BASES:
        base(name)
    return multiprocessing.get_context("fork").Pool(processes() if procs is None else procs)


class Workers:
    """A pool kept across calls of :func:`run_specs`, so its processes keep what they have
    recovered; it is replaced after a call that stopped early."""

    def __init__(self, procs: int | None = None) -> None:
        self.procs = processes() if procs is None else procs
        self._pool: Any = None

    def pool(self) -> Any:
        if self._pool is None:
            self._pool = make_pool(self.procs)
        return self._pool

    def reset(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None


def processes() -> int:
    """Worker processes: ``SEGWAL_CRASH_PROCS``, else one per core up to two."""
    value = os.environ.get("SEGWAL_CRASH_PROCS")
    if value:
        return max(1, int(value))
    return max(1, min(2, os.cpu_count() or 1))


def chunks(specs: Sequence[Spec], size: int) -> list[list[Spec]]:
    """Consecutive runs of ``size`` workloads (consecutive ones share prefixes, so their
    images repeat: one process caches them)."""
    return [list(specs[i : i + size]) for i in range(0, len(specs), size)]


def run_specs(
    specs: Sequence[Spec],
    policy: Policy | None = None,
    *,
    skip: Iterable[str] = (),
    procs: int | None = None,
    chunk: int = 9,
    until: Callable[[Report], bool] | None = None,
    progress: Callable[[Report], None] | None = None,
    workers: Workers | None = None,
) -> Report:
    """Check every workload of ``specs`` (stopping at the first violation, or once
    ``until(report)`` holds), in ``procs`` processes (forked: the starting logs are built
    first, so every process shares them)."""
    policy = policy or Policy()
    skip = frozenset(skip)
    procs = processes() if procs is None else procs
    for name in {s.base for s in specs}:
        base(name)
    report = Report(Totals(seeds={policy.seed}), set())
    began = time.perf_counter()

    def take(result: tuple[Totals, list[bytes], str | None, Spec | None]) -> bool:
        totals, keys, violation, failed = result
        report.totals.add(totals)
        report.keys.update(keys)
        report.wall = time.perf_counter() - began
        if progress is not None:
            progress(report)
        if violation is not None and report.violation is None:
            report.violation, report.failed_spec = violation, failed
        return report.violation is not None or (until is not None and until(report))

    work: list[Job] = [(policy, skip, part) for part in chunks(specs, chunk)]
    if workers is not None and workers.procs > 1:
        for result in workers.pool().imap(_work, work):
            if take(result):
                workers.reset()
                break
        return report
    if procs <= 1 or len(work) <= 1:
        for job in work:
            if take(_work(job)):
                break
        return report
    with make_pool(procs) as own:
        for result in own.imap(_work, work):
            if take(result):
                own.terminate()
                break
    return report


# -- every barrier is load-bearing --------------------------------------------------------------

BARRIER_POLICY = Policy(exhaustive_limit=8, random_subsets=12, full_every=8)


# Workloads aimed at one protocol path each (the exhaustive part below covers the rest).
TARGETED: tuple[tuple[str, tuple[tuple[str, float | None], ...]], ...] = (
    ("full", (("rewind_seg", None),)),  # truncate_after at a segment end: no rewrite
    ("full", (("append", None), ("rewind_seg", None), ("append", None))),
    ("full", (("batch", None), ("trunc_after", 0.5), ("batch", None))),
    ("full", (("cursor", 0.5), ("append", None), ("cursor", 0.9))),  # commit, then delete
    ("full", (("hold", 0.1), ("rotate", None), ("hold", None), ("retention", None))),
    ("full", (("big", None), ("trunc_before", 0.7), ("prune", 0.5))),
    ("empty", (("batch", None), ("rotate", None), ("trunc_before", 0.9), ("batch", None))),
)


def barrier_specs(mode: str, seed: int = 0, *, deep: bool = False) -> list[Spec]:
    """The workloads a skipped barrier is looked for in: the log's creation, the targeted
    workloads and every sequence of up to two steps on the empty log; with ``deep``, also
    every sequence of up to two steps on the full log and a dozen random workloads."""
    specs = (
        creation_specs((mode,))
        + [Spec(mode, name, steps) for name, steps in TARGETED]
        + exhaustive_specs(modes=(mode,), bases=("empty",), depth=2)
    )
    if deep:
        specs += exhaustive_specs(modes=(mode,), bases=("full",), depth=2)
        specs += random_specs(seed, 12, modes=(mode,), length=(8, 14))
    return specs


@dataclass
class BarrierResult:
    site: str
    mode: str
    caught: bool
    calls: int  # times the barrier was reached (and skipped)
    spec: Spec | None = None
    violation: str | None = None
    states: int = 0
    seconds: float = 0.0

    def row(self) -> str:
        if self.caught:
            assert self.spec is not None
            return f"caught: {self.spec.label()}"
        if not self.calls:
            return "never reached"
        return "not caught"


def search_barrier(
    site: str,
    mode: str,
    specs: Sequence[Spec] | None = None,
    policy: Policy = BARRIER_POLICY,
    *,
    deep: bool = False,
) -> BarrierResult:
    """Enumerate with barrier ``site`` skipped until a promise breaks."""
    enumerator = Enumerator(policy, skip={site})
    began = time.process_time()
    result = BarrierResult(site, mode, False, 0)
    for spec in barrier_specs(mode, deep=deep) if specs is None else specs:
        try:
            enumerator.run(spec)
        except Violation as exc:
            result.caught, result.spec, result.violation = True, spec, str(exc)
            break
    result.calls = enumerator.calls[site]
    result.states = enumerator.totals.states
    result.seconds = time.process_time() - began
    return result


def _barrier_task(task: tuple[str, str, bool]) -> BarrierResult:
    site, mode, deep = task
    return search_barrier(site, mode, deep=deep)


def barrier_table(
    sites: Sequence[str] | None = None,
    modes: Sequence[str] = MODES,
    procs: int | None = None,
    progress: Callable[[BarrierResult], None] | None = None,
    *,
    deep: bool = False,
) -> list[BarrierResult]:
    """Search every (site, mode) pair, in ``procs`` processes."""
    pairs = [(s, m, deep) for s in (sync_sites() if sites is None else sites) for m in modes]
    for name in BASES:
        base(name)
    procs = processes() if procs is None else procs
    results = []
    if procs <= 1:
        for pair in pairs:
            results.append(_barrier_task(pair))
            if progress is not None:
                progress(results[-1])
    else:
        with multiprocessing.get_context("fork").Pool(procs) as pool:
            for result in pool.imap_unordered(_barrier_task, pairs):
                results.append(result)
                if progress is not None:
                    progress(result)
    order = {p[:2]: i for i, p in enumerate(pairs)}
    return sorted(results, key=lambda r: order[r.site, r.mode])


def format_table(results: Sequence[BarrierResult], notes: dict[str, str] | None = None) -> str:
    """A markdown table: site x mode -> caught (with the first failing workload) or not."""
    notes = notes or {}
    modes = list(dict.fromkeys(r.mode for r in results))
    by = {(r.site, r.mode): r for r in results}
    lines = ["| site | " + " | ".join(modes) + " | note |", "|---" * (len(modes) + 2) + "|"]
    for site in dict.fromkeys(r.site for r in results):
        cells = [by[site, m].row() if (site, m) in by else "" for m in modes]
        lines.append(f"| `{site}` | " + " | ".join(cells) + f" | {notes.get(site, '')} |")
    return "\n".join(lines)
