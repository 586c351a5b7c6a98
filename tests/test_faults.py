"""Error injection on the in-memory file system: the log fails closed and stays recoverable.

For each sync mode a fixed workload (appends, batches, forced and size rotations, a hold, a
checkpoint, a rewind, a release, syncs and a close) runs once without faults to count the
calls of each kind; then it runs again once per call with that call failing: EIO at every
``fdatasync`` and every directory ``fsync``; at every ``pwrite`` EIO (nothing written) and
a short write ending in ENOSPC; ENOSPC at every create; EIO at every rename and unlink.
A second matrix fails every call of ``open`` the same way (``mkdir``, the lock, creates,
writes, barriers, renames, unlinks, ``ftruncate``), both when it creates a new log and
when it recovers a damaged one (a torn tail to cut, copied aside first in "truncate" mode,
and a leftover temp segment to remove).

After each injected failure:

* the call that hit it raises ``StorageError`` with the injected errno (a barrier that
  failed never acknowledges anything) unless it hit a cache file (``*.idx``) or the
  ``LOCK`` publication, whose errors segwal documents as ignored;
* ``durable_lsn`` never moves again; every later mutation raises ``WalFailedError``;
  waiting for an undurable LSN raises ``WalFailedError``; ``close()`` works;
* a sample of the crash images the file system could leave right then reopens to a
  contiguous, byte-exact prefix that holds every acknowledged record, ends on a batch
  boundary, agrees with a second reopen and takes new appends;
* reopening the same (uncrashed) file system, as a process restart would, holds the same
  invariants and appends continue; a power loss after that loses nothing it acknowledged
  (except after the failed barriers of ``DOOMING_BARRIERS``, which have no clean undo;
  the others undo what they did not cover, see ``test_restart_after_failed_barrier...``).

Plus the group commit under threads: when the shared ``fdatasync`` fails, every appender
waiting on it raises and none returns success.
"""

from __future__ import annotations

import errno
import random
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import segwal
from conftest import FakeClock, forget_clean_close, payload
from segwal import StorageError, Wal, WalFailedError
from segwal.errors import ClosedError
from segwal.testing import MemoryFileSystem, Op

DIR = "/wal"
SEGMENT_BYTES = 640
SYNC_MODES = ("always", "interval", "never")
IMAGES_PER_FAILURE = 6  # crash images reopened after each injected failure (sampled)
CACHE_SUFFIXES = (".idx",)  # sidecars written without a barrier; segwal ignores their errors
# Failed barriers whose doomed operations (in the page cache, maybe not on disk) a
# restarted log counts as durable: see test_restart_after_failed_barrier_then_power_loss.
# A failed barrier in the middle of a rewind has no clean undo (docs/DURABILITY.md says so):
# after it, only a restart that drops the page cache (a reboot) is safe.
DOOMING_BARRIERS = {
    ("sync_dir", "truncate.rename"),
    ("sync_dir", "truncate.unlink"),
}  # sidecars segwal writes without a barrier, errors ignored


def body(lsn: int, gen: int) -> bytes:
    """The payload of ``lsn`` in generation ``gen`` (a rewind starts a new generation, so
    a record that reappears from before the rewind is told apart from its replacement)."""
    return payload(lsn + 1_000_003 * gen)


# -- the model of what the log must hold ----------------------------------------------------


@dataclass
class Model:
    """What any reopen of the log may and must show."""

    expected: dict[int, bytes] = field(default_factory=dict)  # LSN -> current payload
    alternatives: dict[int, set[bytes]] = field(default_factory=dict)  # in-flight rewinds
    ends: set[int] = field(default_factory=lambda: {0})  # batch boundaries (last LSNs)
    acked: int = 0  # every record up to here was acknowledged durable
    floor: int = 1  # durable checkpoint: nothing below it may come back
    required_from: int = 1  # acknowledged records from here up must be there
    gen: int = 0
    highest: int = 0  # highest LSN ever written

    def appended(self, lsns: range) -> None:
        for lsn in lsns:
            self.expected[lsn] = body(lsn, self.gen)
        if lsns:
            self.ends.add(lsns[-1])
            self.highest = max(self.highest, lsns[-1])

    def rewind(self, lsn: int, *, done: bool) -> None:
        """``truncate_after(lsn)``: done, or in flight (old or new state may survive)."""
        for old in [n for n in self.expected if n > lsn]:
            payload_ = self.expected.pop(old)
            if not done:
                self.alternatives.setdefault(old, set()).add(payload_)
        self.ends.add(lsn)
        if done:
            self.ends = {e for e in self.ends if e <= lsn}
            self.alternatives = {n: v for n, v in self.alternatives.items() if n <= lsn}
        self.acked = min(self.acked, lsn)
        self.gen += 1

    def allowed(self, lsn: int) -> set[bytes]:
        out = set(self.alternatives.get(lsn, ()))
        if lsn in self.expected:
            out.add(self.expected[lsn])
        return out


def open_wal(fs: MemoryFileSystem, mode: str = "always", **options: Any) -> Wal:
    options.setdefault("clock", FakeClock())
    return segwal.open(
        DIR,
        filesystem=fs,
        segment_bytes=SEGMENT_BYTES,
        sync=mode,  # type: ignore[arg-type]
        sync_interval=3600.0,  # the interval flusher never fires by itself here
        **options,
    )


def check_reopen(fs: MemoryFileSystem, model: Model, where: str) -> list[tuple[int, bytes]]:
    """Reopen ``fs``: a consistent prefix with every acknowledged record, a stable second
    reopen, and new appends; returns the records."""
    try:
        wal = open_wal(fs)
    except Exception as exc:
        raise AssertionError(f"{where}: reopen raised {exc!r}") from exc
    try:
        records = [(r.lsn, r.payload) for r in wal.replay(unsynced=True)]
        first, last = wal.first_lsn, wal.last_lsn
        assert [lsn for lsn, _ in records] == list(range(first, last + 1)), (
            f"{where}: LSNs not contiguous from {first} to {last}"
        )
        assert first >= model.floor, f"{where}: LSNs below the checkpoint {model.floor} came back"
        assert last <= model.highest, f"{where}: LSN {last} was never written"
        assert last in model.ends or last == first - 1, f"{where}: LSN {last} splits a batch"
        need = range(max(model.required_from, model.floor), model.acked + 1)
        if need:
            assert first <= need.start, f"{where}: acknowledged LSNs from {need.start} lost"
            assert last >= need[-1], f"{where}: acknowledged LSNs {last + 1}..{need[-1]} lost"
        for lsn, data in records:
            assert data in model.allowed(lsn), f"{where}: payload of LSN {lsn} differs"
        assert wal.durable_lsn == last
    finally:
        wal.close()
    wal = open_wal(fs)
    try:
        again = [(r.lsn, r.payload) for r in wal.replay(unsynced=True)]
        assert again == records, f"{where}: a second reopen disagrees with the first"
        assert not wal.recovery.cuts, f"{where}: a second reopen cut again"
        lsn = wal.append(b"after recovery")
        assert lsn == (records[-1][0] if records else wal.first_lsn - 1) + 1
        assert wal.read(lsn).payload == b"after recovery"
    finally:
        wal.close()
    return records


def sample_images(fs: MemoryFileSystem, count: int, seed: int) -> list[MemoryFileSystem]:
    """A seeded sample of the distinct crash images ``fs`` could leave now."""
    images = fs.crash_states(seed=seed, random_subsets=8, exhaustive_limit=6, limit=120)
    if len(images) <= count:
        return images
    rng = random.Random(seed)
    # Always keep the two extremes (nothing pending persisted, everything did).
    return [images[0], images[-1], *rng.sample(images[1:-1], count - 2)]


# -- the workload ---------------------------------------------------------------------------


Step = tuple[str, Callable[[Wal, Model], None]]


def _append(count: int) -> Step:
    def run(wal: Wal, model: Model) -> None:
        first = wal.next_lsn
        if count == 1:
            lsns = range(first, first + 1)
            model.appended(lsns)
            assert wal.append(body(first, model.gen)) == first
        else:
            lsns = range(first, first + count)
            model.appended(lsns)
            assert wal.append_batch([body(n, model.gen) for n in lsns]) == lsns
        if wal._state.config.sync == "always":
            # Acknowledged on return: the barrier that covers it completed.
            assert wal.durable_lsn >= lsns[-1]

    return (f"append x{count}", run)


def _sync(wal: Wal, model: Model) -> None:
    assert wal.sync() == wal.last_lsn
    assert wal.durable_lsn == wal.last_lsn


def _rotate(wal: Wal, model: Model) -> None:
    wal.rotate()
    assert wal.durable_lsn == wal.last_lsn


def _hold(wal: Wal, model: Model) -> None:
    # Inside the second segment: the checkpoint below may then delete the first one.
    wal.hold("reader", wal.segments()[1].first_lsn + 1)


def _release(wal: Wal, model: Model) -> None:
    assert wal.release("reader")


def _checkpoint(wal: Wal, model: Model) -> None:
    target = min(wal.holds()["reader"], wal.durable_lsn + 1)
    assert wal.segments()[0].last_lsn < target  # a whole segment goes
    model.required_from = max(model.required_from, target)  # in flight: either side
    wal.truncate_before(target)
    model.floor = wal.first_lsn


def _rewind(wal: Wal, model: Model) -> None:
    # Into the last sealed segment: the active one is deleted, the sealed one rewritten.
    target = wal.segments()[-2].first_lsn + 2
    assert target < wal.segments()[-2].last_lsn
    model.rewind(target, done=False)
    wal.truncate_after(target)
    model.rewind(target, done=True)


WORKLOAD: list[Step] = [
    _append(1),
    _append(1),
    _append(3),
    ("sync", _sync),
    _append(1),
    _append(5),  # crosses SEGMENT_BYTES: a size rotation
    ("rotate", _rotate),
    ("hold", _hold),
    _append(2),
    ("checkpoint", _checkpoint),
    _append(4),
    ("sync", _sync),
    ("rewind", _rewind),
    _append(1),
    ("release", _release),
    _append(8),  # another size rotation
    _append(1),
]


def _mutations(wal: Wal) -> Iterator[tuple[str, Callable[[], object]]]:
    yield "append", lambda: wal.append(b"late")
    yield "append_batch", lambda: wal.append_batch([b"late", b"later"])
    yield "sync", wal.sync
    yield "rotate", wal.rotate
    yield "truncate_before", lambda: wal.truncate_before(wal.first_lsn)
    yield "truncate_after", lambda: wal.truncate_after(wal.last_lsn)
    yield "apply_retention", wal.apply_retention
    yield "hold", lambda: wal.hold("late", wal.first_lsn)
    yield "release", lambda: wal.release("reader")


@dataclass
class Outcome:
    """One run of the workload with (at most) one injected fault."""

    fs: MemoryFileSystem
    model: Model
    wal: Wal
    failed_step: str | None = None
    error: BaseException | None = None
    hit: Op | None = None  # the operation the fault failed


def run_workload(mode: str, arm: Callable[[MemoryFileSystem], object] | None) -> Outcome:
    fs = MemoryFileSystem()
    wal = open_wal(fs, mode)
    model = Model()
    out = Outcome(fs, model, wal)
    if arm is not None:
        arm(fs)
    steps = [*WORKLOAD, ("close", lambda w, m: w.close())]
    for name, step in steps:
        before = fs.op_count
        try:
            step(wal, model)
        except (StorageError, WalFailedError) as exc:
            out.failed_step, out.error = name, exc
            break
        finally:
            hits = [op for op in fs.ops[before:] if op.error is not None]
            if hits and out.hit is None:
                out.hit = hits[0]
        if out.hit is not None and not _exempt(out.hit):
            pytest.fail(f"{name} returned normally after the injected failure of {out.hit}")
        model.acked = max(model.acked, wal.durable_lsn)
        model.floor = max(model.floor, wal.first_lsn)
        if name == "close":
            model.acked = max(model.acked, wal.last_lsn)
    return out


def _exempt(op: Op) -> bool:
    """Operations whose failure segwal documents as harmless: cache sidecars, LOCK."""
    return op.path.endswith(CACHE_SUFFIXES) or op.path.rsplit("/", 1)[-1] == "LOCK"


def call_counts(mode: str) -> dict[str, int]:
    """Calls of each fault kind the workload makes after open (close included)."""
    fs = MemoryFileSystem()
    wal = open_wal(fs, mode)
    before = dict(fs.calls)
    model = Model()
    for _, step in WORKLOAD:
        step(wal, model)
    wal.close()
    return {k: fs.calls[k] - before.get(k, 0) for k in fs.calls}


_COUNTS = {mode: call_counts(mode) for mode in SYNC_MODES}


def _cases() -> Iterator[Any]:
    faults: list[tuple[str, int, int | None, str]] = [
        ("sync", errno.EIO, None, "eio"),
        ("sync_dir", errno.EIO, None, "eio"),
        ("write", errno.EIO, None, "eio"),  # nothing of the write applied
        ("write", errno.ENOSPC, 37, "short37"),  # 37 bytes applied, then ENOSPC
        ("create", errno.ENOSPC, None, "enospc"),
        ("rename", errno.EIO, None, "eio"),
        ("unlink", errno.EIO, None, "eio"),
    ]
    for mode in SYNC_MODES:
        for kind, code, short, label in faults:
            for nth in range(1, _COUNTS[mode].get(kind, 0) + 1):
                yield pytest.param(mode, kind, nth, code, short, id=f"{mode}-{kind}-{label}-{nth}")


def test_every_kind_is_exercised() -> None:
    """The matrix is not vacuous: the workload makes each call kind in each mode."""
    for mode in SYNC_MODES:
        counts = _COUNTS[mode]
        for kind in ("sync", "sync_dir", "write", "create", "rename", "unlink"):
            assert counts.get(kind, 0) > 0, (mode, kind, counts)


@pytest.mark.parametrize(("mode", "kind", "nth", "code", "short"), list(_cases()))
def test_fault_fails_closed(mode: str, kind: str, nth: int, code: int, short: int | None) -> None:
    out = run_workload(mode, lambda fs: fs.fail(kind, nth=nth, error=code, short=short))
    fs, model, wal = out.fs, out.model, out.wal
    assert out.hit is not None, "the fault never fired: the call counts are stale"
    assert out.hit.error == code
    if out.error is None:
        # Only a failure that segwal documents as harmless may go unreported, and then the
        # log must have finished the workload and closed normally.
        assert _exempt(out.hit), out.hit
        assert wal.closed
        check_reopen(fs, model, f"after harmless {out.hit}")
        return
    where = f"{out.failed_step} with {out.hit}"
    if out.failed_step != "close" or not isinstance(out.error, WalFailedError):
        assert isinstance(out.error, StorageError), (where, out.error)
        assert out.error.errno == code, (where, out.error)
    durable = wal.durable_lsn
    if out.failed_step != "rewind":  # a failed rewind may drop what it was asked to drop
        model.acked = max(model.acked, durable)

    # Crash images right after the failure.
    seed = zlib.crc32(f"{mode}/{kind}/{nth}/{code}/{short}".encode())  # stable across runs
    for i, image in enumerate(sample_images(fs, IMAGES_PER_FAILURE, seed)):
        check_reopen(image, model, f"{where}, crash image {i} ({image.crash_info})")

    # Fails closed: nothing mutates any more, durable_lsn stays put.
    expected_error: type[Exception] = ClosedError if wal.closed else WalFailedError
    for name, mutate in _mutations(wal):
        with pytest.raises(expected_error):
            mutate()
        assert wal.durable_lsn == durable, f"durable_lsn moved after the failure ({name})"
    if not wal.closed and wal.last_lsn > durable:
        with pytest.raises(WalFailedError):
            wal.wait_durable(wal.last_lsn)
    ops = fs.op_count
    wal.close()
    wal.close()
    assert wal.durable_lsn == durable
    assert all(op.kind == "note" for op in fs.ops[ops:]), "close() wrote after the failure"

    # A process restart without a power loss: the same file system, page cache and all.
    check_reopen(fs, model, f"{where}, restarted")
    if (out.hit.kind, out.hit.site) in DOOMING_BARRIERS:
        return  # a rewind's failed barrier has no clean undo (docs/DURABILITY.md)
    restart_then_power_loss(fs, where, seed)


def restart_then_power_loss(fs: MemoryFileSystem, where: str, seed: int) -> None:
    """Reopen (a process restart), append, then lose power: nothing the restarted log
    acknowledged may be lost."""
    wal = open_wal(fs)
    try:
        more = wal.append_batch([b"new-1", b"new-2"])
        assert wal.durable_lsn >= more[-1]
        kept = [(r.lsn, r.payload) for r in wal.replay()]
    finally:
        wal.close()
    for i, image in enumerate(sample_images(fs, 4, seed)):
        try:
            wal = open_wal(image)
        except Exception as exc:
            raise AssertionError(f"{where}: restart, power loss, image {i}: {exc!r}") from exc
        try:
            got = [(r.lsn, r.payload) for r in wal.replay()]
        finally:
            wal.close()
        assert got == kept, f"{where}: restart, power loss, image {i}: records differ"


# -- barriers whose failure a restarted log forgets (known bug) ------------------------------


def _one_record(wal: Wal) -> None:
    wal.append(b"acknowledged")


def _checkpointable(wal: Wal) -> None:
    wal.append(b"first segment")
    wal.rotate()
    wal.append(b"second segment")
    wal.hold("reader", 2)  # META exists before the checkpoint replaces it


RESTART_CASES = {
    # name: (prepare, fault kind, the call whose barrier fails)
    "append.sync": (_one_record, "sync", lambda wal: wal.append(b"failed")),
    "seal.sync": (_one_record, "sync", lambda wal: wal.rotate()),
    "create.rename": (_one_record, "sync_dir", lambda wal: wal.rotate()),
    "meta.rename": (_checkpointable, "sync_dir", lambda wal: wal.truncate_before(2)),
}


@pytest.mark.parametrize("case", sorted(RESTART_CASES))
def test_restart_after_failed_barrier_then_power_loss(case: str) -> None:
    prepare, kind, act = RESTART_CASES[case]
    fs = MemoryFileSystem()
    wal = open_wal(fs)
    prepare(wal)
    fs.fail(kind, error=errno.EIO)
    with pytest.raises(StorageError):
        act(wal)
    wal.close()
    # The process restarts (no power loss), recovers and acknowledges a new record.
    wal = open_wal(fs)
    wal.append(b"after restart")
    acked = [(r.lsn, r.payload) for r in wal.replay()]
    wal.close()
    problems = []
    for image in fs.crash_states():
        try:
            wal = open_wal(image)
            try:
                got = [(r.lsn, r.payload) for r in wal.replay()]
            finally:
                wal.close()
        except segwal.SegwalError as exc:
            problems.append(f"{image.crash_info}: {exc!r}")
            continue
        if got != acked:
            problems.append(f"{image.crash_info}: holds {got}, acknowledged {acked}")
    assert not problems, f"{len(problems)} crash images fail, e.g. {problems[0]}"


# -- faults while opening -------------------------------------------------------------------


def damaged_log() -> tuple[MemoryFileSystem, Model]:
    """A crash image that recovery has to repair: a torn last batch to cut (and, in
    "truncate" mode, to copy aside first) and a leftover temp segment to remove."""
    fs = MemoryFileSystem()
    wal = open_wal(fs, "never")
    model = Model()
    for _ in range(4):
        lsns = wal.append_batch([body(n, 0) for n in range(wal.next_lsn, wal.next_lsn + 3)])
        model.appended(lsns)
    wal.sync()
    model.acked = wal.durable_lsn
    lsns = wal.append_batch([body(n, 0) for n in range(wal.next_lsn, wal.next_lsn + 5)])
    model.appended(lsns)
    wal.close()
    image = fs.snapshot()
    forget_clean_close(DIR, image)  # the cut below stands for a torn write
    segments = sorted(p for p, c in image.tree(DIR).items() if p.endswith(".wal") and c)
    handle = image.open_write(segments[-1])
    handle.truncate(handle.size() - 9)
    handle.sync("test")
    handle.close()
    temp = image.create(f"{DIR}/{'9' * 20}.wal.tmp")
    temp.pwrite(b"partial header", 0)
    temp.sync("test")
    temp.close()
    image.sync_dir(DIR, "test")
    return image.fork(), model


def fresh_log() -> tuple[MemoryFileSystem, Model]:
    """No log yet: opening creates the directory, the lock and the first segment."""
    return MemoryFileSystem(), Model()


OPEN_SCENARIOS = {"new": fresh_log, "damaged": damaged_log}
OPEN_KINDS = ("mkdir", "lock", "create", "write", "sync", "sync_dir", "rename", "unlink")
OPEN_KINDS += ("truncate",)


def _open_cases() -> Iterator[Any]:
    for scenario, make in OPEN_SCENARIOS.items():
        for recovery in ("tolerate_tail", "truncate"):
            if scenario == "new" and recovery == "truncate":
                continue
            probe, _ = make()
            before = dict(probe.calls)
            wal = open_wal(probe, recovery=recovery)
            counts = {k: probe.calls[k] - before.get(k, 0) for k in probe.calls}
            wal.close()
            for kind in OPEN_KINDS:
                for nth in range(1, counts.get(kind, 0) + 1):
                    yield pytest.param(
                        scenario, recovery, kind, nth, id=f"{scenario}-{recovery}-{kind}-{nth}"
                    )


@pytest.mark.parametrize(("scenario", "recovery", "kind", "nth"), list(_open_cases()))
def test_fault_while_opening(scenario: str, recovery: str, kind: str, nth: int) -> None:
    """A failure while opening (creating the log, or recovering it) raises StorageError,
    leaves the lock free, and leaves a directory that a later open repairs, whether the
    machine crashes right then or not."""
    fs, model = OPEN_SCENARIOS[scenario]()
    fault = fs.fail(kind, nth=nth)
    before = fs.op_count
    try:
        wal = open_wal(fs, recovery=recovery)
    except StorageError as exc:
        assert exc.errno == errno.EIO
    else:
        hit = [op for op in fs.ops[before:] if op.error is not None]
        assert hit and all(_exempt(op) for op in hit), f"open succeeded despite {hit}"
        wal.close()
    assert fault.fired, "the fault never fired: the call counts are stale"
    for i, image in enumerate(sample_images(fs, IMAGES_PER_FAILURE, nth)):
        check_reopen(image, model, f"open: {kind} #{nth} failed, crash image {i}")
    check_reopen(fs, model, f"open: {kind} #{nth} failed, reopened")


def test_open_releases_the_lock_when_it_fails_early() -> None:
    """Writing the pid into LOCK fails: the lock must not stay held by the failed open."""
    fs = MemoryFileSystem()
    open_wal(fs).close()
    fs.fail("write")  # the first write of an open: the pid into LOCK
    with pytest.raises(StorageError):
        open_wal(fs)
    open_wal(fs).close()  # LockError: the failed open still holds the lock


# -- the interval flusher -------------------------------------------------------------------


def test_interval_flusher_failure_fails_closed() -> None:
    """A failed background barrier: appenders and waiters get WalFailedError afterwards."""
    fs = MemoryFileSystem()
    wal = segwal.open(DIR, filesystem=fs, sync="interval", sync_interval=0.01, clock=FakeClock())
    try:
        first = wal.append(b"one")
        assert wal.wait_durable(first, timeout=10)
        fs.fail("sync", error=errno.EIO)
        second = wal.append(b"two")
        with pytest.raises(WalFailedError) as info:
            wal.wait_durable(second, timeout=10)
        assert isinstance(info.value.cause, StorageError)
        assert wal.durable_lsn == first
        with pytest.raises(WalFailedError):
            wal.append(b"three")
        with pytest.raises(WalFailedError):
            wal.sync()
    finally:
        wal.close()
    assert wal.durable_lsn == first
    model = Model(expected={1: b"one", 2: b"two"}, ends={0, 1, 2}, acked=first, highest=2)
    for i, image in enumerate(sample_images(fs, 8, 7)):
        check_reopen(image, model, f"flusher failure, crash image {i}")


# -- group commit under threads -------------------------------------------------------------


class SlowBarrierFS(MemoryFileSystem):
    """Holds the ``n``-th ``append.sync`` (counted from ``arm``) for a while, so that other
    appenders pile up behind it before it runs."""

    def arm(self, nth: int, delay: float) -> None:
        self._slow_nth, self._slow_delay, self._slow_seen = nth, delay, 0
        self._slow_lock = threading.Lock()

    def open_write(self, path: str) -> Any:
        handle = super().open_write(path)
        if not hasattr(self, "_slow_nth") or not path.endswith(".wal"):
            return handle
        fs = self
        inner_sync = handle.sync

        class Slow:
            def __getattr__(self, name: str) -> Any:
                return getattr(handle, name)

            @property
            def path(self) -> str:
                return handle.path

            def sync(self, site: str) -> None:
                if site == "append.sync":
                    with fs._slow_lock:
                        fs._slow_seen += 1
                        slow = fs._slow_seen == fs._slow_nth
                    if slow:
                        time.sleep(fs._slow_delay)
                inner_sync(site)

        return Slow()


@pytest.mark.parametrize("nth", [1, 2, 5])
def test_group_fsync_failure_fails_every_waiter(nth: int) -> None:
    fs = SlowBarrierFS()
    fs.arm(10**9, 0)  # wrap handles from the start; nothing slow yet
    wal = segwal.open(DIR, filesystem=fs, segment_bytes=1 << 20, clock=FakeClock())
    fs.arm(nth, 0.2)
    fs.fail("sync", nth=nth, error=errno.EIO)
    threads_n, per_thread = 8, 6
    results: list[list[tuple[str, Any]]] = [[] for _ in range(threads_n)]
    barrier = threading.Barrier(threads_n)
    durable_at_return: list[tuple[int, int]] = []

    def appender(t: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            data = f"t{t}-{i}".encode()
            try:
                lsn = wal.append(data)
            except (StorageError, WalFailedError) as exc:
                results[t].append(("error", exc))
                return
            durable_at_return.append((lsn, wal.durable_lsn))
            results[t].append(("ok", (lsn, data)))

    threads = [threading.Thread(target=appender, args=(t,)) for t in range(threads_n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
        assert not th.is_alive()
    durable = wal.durable_lsn
    errors = [r[1] for rs in results for r in rs if r[0] == "error"]
    oks = [r[1] for rs in results for r in rs if r[0] == "ok"]
    assert all(lsn <= d for lsn, d in durable_at_return), "an append returned before durable"
    # Appenders were queued behind the failing barrier (their frames written, not durable).
    assert wal.last_lsn - durable >= 2, (wal.last_lsn, durable)
    # Every thread ends in an error: the log failed, so nobody can get past it.
    assert len(errors) == threads_n
    assert sum(isinstance(e, StorageError) for e in errors) == 1, errors  # the leader
    assert all(isinstance(e, StorageError | WalFailedError) for e in errors)
    # No acknowledgement after the failed barrier: every success is covered by the
    # durable LSN the log still stands by, which no longer moves.
    assert all(lsn <= durable for lsn, _ in oks), (oks, durable)
    if nth == 1:
        assert not oks
    with pytest.raises(WalFailedError):
        wal.append(b"late")
    wal.close()
    assert wal.durable_lsn == durable
    acked = dict(oks)
    for i, image in enumerate(sample_images(fs, 8, nth)):
        got = dict(_records(image))
        assert sorted(got) == list(range(1, len(got) + 1))
        for lsn, data in acked.items():
            assert got.get(lsn) == data, f"crash image {i}: acknowledged LSN {lsn} lost"
    got = dict(_records(fs))
    for lsn, data in acked.items():
        assert got.get(lsn) == data


def _records(fs: MemoryFileSystem) -> list[tuple[int, bytes]]:
    wal = segwal.open(DIR, filesystem=fs, segment_bytes=1 << 20, clock=FakeClock())
    try:
        return [(r.lsn, r.payload) for r in wal.replay()]
    finally:
        wal.close()
