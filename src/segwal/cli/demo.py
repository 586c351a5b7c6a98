"""``segwal demo``: kill a writer with SIGKILL mid-write and prove no acknowledged record is lost.

A child process (``python -m segwal _demo-child DIR``) appends batches with sync="always"
to small segments, so the log rotates several times a second, and after each append returns
it reports the acknowledged LSNs to the parent over a pipe. The parent lets it run for a
random 0.3-1.0 s, kills it with SIGKILL, reopens the log, and checks that every
acknowledged LSN is there with the exact payload. Payloads are derived from their LSN, so
the parent needs no copy of what the child wrote. Then it runs :func:`segwal.verify`.

Part of the CLI: it uses only the public API of ``segwal``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO

import click

import segwal

SEGMENT_BYTES = 64 * 1024
RUN_SECONDS = (0.3, 1.0)  # how long the child writes before it is killed
CHILD_START_TIMEOUT = 30.0  # interpreter start-up and opening the log
CHILD_MAX_SECONDS = 60.0  # an orphaned child stops by itself
BATCH_SIZES = (1, 1, 1, 2, 3, 5, 8, 13)
CHILD_EXIT_CORRUPT = 10  # the child found corruption (1 would be any uncaught exception)
CHILD_EXIT_IO = 3
_DOMAIN = b"segwal-demo/"


def payload_for(lsn: int) -> bytes:
    """The payload the demo writes at ``lsn``: 32 to 1052 bytes derived from the LSN."""
    digest = hashlib.sha256(_DOMAIN + str(lsn).encode()).digest()
    size = 32 + digest[0] * 4
    return (digest * (size // len(digest) + 1))[:size]


# -- the child ---------------------------------------------------------------------------


def run_child(directory: str, *, seed: int, max_seconds: float) -> int:
    """Append batches until killed, writing ``A first last type`` after each acknowledgement.

    Runs in the child process; its stdout is the pipe to the parent.
    """
    out = sys.stdout.fileno()
    rng = random.Random(seed)
    try:
        wal = segwal.open(directory, sync="always", segment_bytes=SEGMENT_BYTES)
    except segwal.SegwalError as exc:
        print(f"segwal demo child: cannot open {directory}: {exc}", file=sys.stderr)
        return CHILD_EXIT_CORRUPT if isinstance(exc, segwal.CorruptionError) else CHILD_EXIT_IO
    with wal:
        os.write(out, f"R {wal.next_lsn}\n".encode())
        deadline = time.monotonic() + max_seconds
        while time.monotonic() < deadline:
            count = rng.choice(BATCH_SIZES)
            first = wal.next_lsn
            # The record type tells how large the batch was, so the parent can check it too.
            if count == 1:
                lsn = wal.append(payload_for(first), type=count)
                lsns = range(lsn, lsn + 1)
            else:
                lsns = wal.append_batch(
                    [payload_for(n) for n in range(first, first + count)], type=count
                )
            if lsns.start != first:
                print(f"segwal demo child: expected LSN {first}, got {lsns.start}", file=sys.stderr)
                return CHILD_EXIT_CORRUPT
            # One write() of a short line to a pipe is atomic: the parent never sees half.
            try:
                os.write(out, f"A {lsns.start} {lsns.stop - 1} {count}\n".encode())
            except BrokenPipeError:  # the parent went away
                return CHILD_EXIT_IO
    return 0


# -- the parent --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ack:
    """A batch the child saw acknowledged: LSNs ``first..last``, all of record ``type``."""

    first: int
    last: int
    type: int


@dataclass(slots=True)
class _ChildRun:
    """What the reader thread heard from one child."""

    ready: threading.Event = field(default_factory=threading.Event)
    start_lsn: int | None = None
    acks: list[Ack] = field(default_factory=list)
    garbage: list[bytes] = field(default_factory=list)


class DemoError(Exception):
    """The demo could not run (not a durability failure); carries an exit code."""

    def __init__(self, message: str, *, hint: str = "", exit_code: int = 3) -> None:
        super().__init__(message)
        self.hint = hint
        self.exit_code = exit_code


@dataclass(slots=True)
class Totals:
    """The numbers the summary reports, over every kill."""

    kills: int = 0
    acknowledged: int = 0
    recovered: int = 0
    lost: int = 0
    mismatched: int = 0
    torn_tails: int = 0
    cut_bytes: int = 0
    segments: int = 0
    first_lsn: int = 1
    last_lsn: int = 0
    verify_ok: bool = True
    verify_problems: list[str] = field(default_factory=list)


Echo = Callable[[str], None]


def _out(text: str) -> None:
    click.echo(text)


def _err(text: str) -> None:
    click.echo(text, err=True)


def _child_command(directory: str, seed: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "segwal",
        "_demo-child",
        directory,
        "--seed",
        str(seed),
        "--max-seconds",
        str(CHILD_MAX_SECONDS),
    ]


def _child_env() -> dict[str, str]:
    # The child must import this very segwal, also when it runs from a source tree.
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(segwal.__file__)))
    paths = [package_root, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def _read_child(stream: IO[bytes], run: _ChildRun) -> None:
    for line in stream:
        if not line.endswith(b"\n"):
            break  # cut short by the kill: never acknowledged to us
        parts = line.split()
        if parts[:1] == [b"R"] and len(parts) == 2:
            run.start_lsn = int(parts[1])
            run.ready.set()
        elif parts[:1] == [b"A"] and len(parts) == 4:
            run.acks.append(Ack(int(parts[1]), int(parts[2]), int(parts[3])))
        else:
            run.garbage.append(line)
    run.ready.set()


@contextlib.contextmanager
def _status(text: str) -> Iterator[Callable[[str], None]]:
    """A live status line on stderr with rich when stderr is a terminal; else nothing."""
    console = None
    if sys.stderr.isatty():
        try:
            from rich.console import Console
        except ImportError:  # rich is an optional extra
            console = None
        else:
            console = Console(stderr=True)
    if console is None:
        yield lambda _text: None
        return
    with console.status(text) as status:
        yield status.update


def _run_child_once(directory: str, seed: int, rng: random.Random) -> tuple[_ChildRun, float]:
    """Start a writer child, let it write for a random while, SIGKILL it; what it acked."""
    with tempfile.TemporaryFile() as child_err:
        proc = subprocess.Popen(
            _child_command(directory, seed),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=child_err,
            env=_child_env(),
        )
        assert proc.stdout is not None
        run = _ChildRun()
        reader = threading.Thread(target=_read_child, args=(proc.stdout, run), daemon=True)
        reader.start()
        try:
            if not run.ready.wait(CHILD_START_TIMEOUT) or run.start_lsn is None:
                raise _child_failed(proc, child_err, "before it started writing")
            run_for = rng.uniform(*RUN_SECONDS)
            deadline = time.monotonic() + run_for
            with _status(f"child pid {proc.pid} writing...") as update:
                while (left := deadline - time.monotonic()) > 0:
                    if proc.poll() is not None:
                        raise _child_failed(proc, child_err, "before it was killed")
                    update(f"child pid {proc.pid} writing: {_count(run.acks)} acknowledged")
                    time.sleep(min(left, 0.05))
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            reader.join()
            proc.stdout.close()
    if proc.returncode != -signal.SIGKILL:
        raise DemoError(f"the writer child exited with code {proc.returncode} before the kill")
    if run.garbage:
        raise DemoError(f"the writer child sent unexpected output: {run.garbage[0]!r}")
    return run, run_for


def _child_failed(proc: subprocess.Popen[bytes], child_err: IO[bytes], when: str) -> DemoError:
    code = proc.poll()
    if code is None:
        proc.kill()
        code = proc.wait()
    child_err.seek(0)
    lines = child_err.read().decode(errors="replace").strip().splitlines()
    detail = "\n".join(lines[-5:]) or "(no output)"
    return DemoError(
        f"the writer child (pid {proc.pid}) exited with code {code} {when}:\n{detail}",
        hint="fix what the child's error above says, then run the demo again",
        exit_code=1 if code == CHILD_EXIT_CORRUPT else 3,
    )


def _count(acks: list[Ack]) -> int:
    return sum(a.last - a.first + 1 for a in acks)


def _describe_recovery(report: segwal.RecoveryReport, echo: Echo) -> None:
    if report.cuts:
        for cut in report.cuts:
            echo(
                f"  torn tail cut:   yes, {cut.length} bytes at offset {cut.offset} of "
                f"{os.path.basename(cut.path)} (LSN {cut.lsn}): {cut.reason}"
            )
    else:
        echo("  torn tail cut:   no (a killed process leaves whole writes in the page cache)")
    for path in report.quarantined:
        echo(f"  moved aside:     {path}")
    if report.removed_temp_files:
        names = ", ".join(os.path.basename(p) for p in report.removed_temp_files)
        echo(f"  removed:         half-created segment {names} (killed mid-rotation)")
    if report.sealed_tail:
        echo("  sealed tail:     yes (killed right after a rotation sealed a segment)")


def _check_log(
    wal: segwal.Wal, acked: dict[int, int], run_start: int
) -> tuple[int, list[int], list[str]]:
    """Replay the log; (records, acknowledged LSNs missing, other problems found)."""
    problems: list[str] = []
    seen: set[int] = set()
    expected: int | None = None
    records = 0
    for record in wal.replay():
        records += 1
        lsn = record.lsn
        if expected is not None and lsn != expected:
            problems.append(f"LSN {lsn} follows LSN {expected - 1}: the log has a gap")
        expected = lsn + 1
        if lsn >= run_start and record.payload != payload_for(lsn):
            problems.append(f"LSN {lsn}: payload differs from what the child wrote")
            continue
        want = acked.get(lsn)
        if want is not None:
            if record.type != want:
                problems.append(f"LSN {lsn}: type {record.type}, the child wrote {want}")
                continue
            seen.add(lsn)
    missing = sorted(set(acked) - seen)
    return records, missing, problems


def _refuse_used_directory(directory: str) -> None:
    """The demo writes, kills and recovers its own log: never in a directory that holds
    anything, which could be someone's log (or /etc)."""
    try:
        entries = segwal.OsFileSystem().list_dir(directory)
    except segwal.StorageError as exc:
        if exc.errno == errno.ENOENT:
            return  # the demo creates it
        raise
    if any(e.name == "LOCK" for e in entries):
        # A log someone is writing right now: say so (exit 3), as every command does.
        fs = segwal.OsFileSystem()
        handle = fs.lock(os.path.join(directory, "LOCK"), exclusive=False)
        if handle is None:
            raise segwal.LockError(directory, None)
        handle.close()
    if entries:
        raise DemoError(
            f"{directory} is not empty ({len(entries)} entries); the demo writes its own log",
            hint="pass a new or empty directory, or none for a temporary one",
            exit_code=2,
        )


def run_demo(
    directory: str | None,
    *,
    kills: int = 1,
    seed: int | None = None,
    echo: Echo = _out,
    log: Echo = _err,
) -> int:
    """Run the kill/reopen/check cycle ``kills`` times; return the exit code (0 or 1)."""
    if seed is None:
        seed = random.SystemRandom().randrange(1 << 32)
    rng = random.Random(seed)
    if directory is None:
        directory = tempfile.mkdtemp(prefix="segwal-demo-")
    else:
        _refuse_used_directory(directory)
    directory = os.path.abspath(directory)
    echo(f"log directory: {directory}")
    echo(
        f"writer: a child process appending batches with sync='always', "
        f"{SEGMENT_BYTES // 1024} KiB segments (seed {seed})"
    )
    acked: dict[int, int] = {}  # LSN -> record type, for every acknowledged record
    totals = Totals()
    run_start: int | None = None
    started = time.monotonic()
    for cycle in range(1, kills + 1):
        log(f"segwal demo: kill {cycle}/{kills}: starting the writer child...")
        run, ran = _run_child_once(directory, rng.randrange(1 << 32), rng)
        assert run.start_lsn is not None
        if run_start is None:
            run_start = run.start_lsn
        elif run.start_lsn != totals.last_lsn + 1:
            raise DemoError(
                f"the child resumed at LSN {run.start_lsn}, expected {totals.last_lsn + 1}",
                exit_code=1,
            )
        for ack in run.acks:
            for lsn in range(ack.first, ack.last + 1):
                acked[lsn] = ack.type
        count = _count(run.acks)
        last_ack = max((a.last for a in run.acks), default=run.start_lsn - 1)
        echo("")
        echo(
            f"kill {cycle}/{kills}: SIGKILL after {ran:.2f} s; the child had {count} records "
            f"acknowledged (LSNs {run.start_lsn}..{last_ack})"
        )
        try:
            wal = segwal.open(directory, segment_bytes=SEGMENT_BYTES)
        except segwal.CorruptionError as exc:
            echo(f"  reopen:          FAILED: {exc}")
            totals.verify_ok = False
            totals.verify_problems.append(str(exc))
            break
        with wal:
            report = wal.recovery
            echo(
                f"  reopened:        LSNs {wal.first_lsn}..{wal.last_lsn} in "
                f"{len(wal.segments())} segments"
            )
            _describe_recovery(report, echo)
            totals.torn_tails += len(report.cuts)
            totals.cut_bytes += sum(c.length for c in report.cuts)
            records, missing, problems = _check_log(wal, acked, run_start)
            totals.first_lsn, totals.last_lsn = wal.first_lsn, wal.last_lsn
        unacked = totals.last_lsn - last_ack
        if missing:
            shown = ", ".join(map(str, missing[:10]))
            echo(f"  LOST:            {len(missing)} acknowledged records: LSNs {shown}")
        else:
            extra = f"; {unacked} more written but not acknowledged" if unacked > 0 else ""
            echo(f"  acknowledged:    all {len(acked)} present with exact payloads{extra}")
        for text in problems[:10]:
            echo(f"  PROBLEM:         {text}")
        check = segwal.verify(directory)
        bad = [p for p in check.problems if p.kind != "torn_tail"]
        echo(
            f"  verify:          {'clean' if check.ok else 'FAILED'} "
            f"({len(check.segments)} segments, {check.records} records)"
        )
        for problem in bad[:5]:
            echo(f"    {problem}")
        totals.kills = cycle
        totals.recovered = records
        totals.lost = len(missing)
        totals.mismatched += len(problems)
        totals.segments = len(check.segments)
        totals.verify_ok = totals.verify_ok and check.ok
        totals.verify_problems.extend(str(p) for p in bad)
    totals.acknowledged = len(acked)
    return _summary(totals, directory, time.monotonic() - started, echo)


def _summary(totals: Totals, directory: str, elapsed: float, echo: Echo) -> int:
    good = totals.lost == 0 and totals.mismatched == 0 and totals.verify_ok
    echo("")
    echo("summary")
    echo(f"  kills (SIGKILL mid-write)   {totals.kills}")
    echo(f"  records acknowledged        {totals.acknowledged}")
    echo(
        f"  records recovered           {totals.recovered} "
        f"(LSNs {totals.first_lsn}..{totals.last_lsn})"
    )
    echo(f"  lost acknowledged           {totals.lost}")
    echo(f"  wrong payloads or gaps      {totals.mismatched}")
    echo(f"  torn tails cut              {totals.torn_tails} ({totals.cut_bytes} bytes)")
    echo(f"  segments                    {totals.segments}")
    echo(f"  verify                      {'clean' if totals.verify_ok else 'FAILED'}")
    echo(f"  time                        {elapsed:.1f} s")
    if good:
        echo("result: OK, every acknowledged record survived")
    else:
        echo("result: FAILED, acknowledged records were lost or damaged")
    echo(f"inspect the log: segwal info {directory}  |  segwal dump {directory}")
    return 0 if good else 1
