"""Ctrl-C on the appending thread at every line of the compression pipeline (log/pipeline.py).

A KeyboardInterrupt lands between two bytecodes of the main thread: while it takes a queued
batch to compress it itself (a full queue makes the appender help), while it compresses,
queues a batch or a ``buffer_bytes`` burst, writes the head of the queue or pops it. Wherever
it lands, the batches already acknowledged must reach the file, in LSN order, each once; the
interrupted call's own records are there whole or not at all; the log stays usable (or, if
the interrupt split a write itself, fails loudly with ``WalFailedError``), and nothing hangs.

The interrupt is raised by a trace function at the n-th point of pipeline.py where the
interpreter would run a pending SIGINT handler (after a call returns, at a loop's backward
jump), for every n until a run finishes without reaching it: the exception the default
handler raises, where it can land, at a chosen point.
"""

from __future__ import annotations

import dis
import itertools
import sys
import threading
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import pytest

import segwal
from segwal import WalFailedError
from segwal.log import pipeline

pytest.importorskip("backports.zstd" if sys.version_info < (3, 14) else "compression.zstd")

_PIPELINE_FILE = pipeline.__file__


def _record(tag: int, size: int) -> bytes:
    head = f'{{"n": {tag}, "text": "'.encode()
    body = (b"alpha bravo charlie delta " * (size // 26 + 1))[: size - len(head) - 2]
    return head + body + b'"}'


def _calls() -> list[tuple[str, list[bytes]]]:
    """Batches above INLINE_BYTES (queued; with one thread, four fill the queue and the
    appender compresses one itself), with single appends in between that make
    ``buffer_bytes`` bursts."""
    calls: list[tuple[str, list[bytes]]] = []
    tag = 0
    for i in range(7):
        calls.append(("batch", [_record(tag + j, 2000) for j in range(10)]))
        tag += 10
        if i % 3 == 1:
            for _ in range(3):
                calls.append(("single", [_record(tag, 3000)]))
                tag += 1
    return calls


def _checkpoints(code: CodeType) -> frozenset[int]:
    """Offsets where CPython runs a pending signal handler: the instruction after a call
    (the handler runs once the call returns), a backward jump's target, a function's
    start. Not between a ``with`` body's end and the call of ``__exit__`` (no check there),
    which a line tracer would wrongly interrupt."""
    instructions = list(dis.get_instructions(code))
    points = {instructions[0].offset}
    for before, after in itertools.pairwise(instructions):
        if before.opname in ("CALL", "CALL_FUNCTION_EX"):
            points.add(after.offset)
        if before.opname.startswith("JUMP_BACKWARD") and isinstance(before.argval, int):
            points.add(before.argval)
    return frozenset(points)


class _Interrupt:
    """Raises KeyboardInterrupt at the n-th signal checkpoint the thread that installs it
    passes in pipeline.py (a trace function that raises is removed: once only)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen = 0
        self.fired = False
        self._points: dict[CodeType, frozenset[int]] = {}

    def _local(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "opcode" and not self.fired:
            code = frame.f_code
            points = self._points.get(code)
            if points is None:
                points = self._points[code] = _checkpoints(code)
            if frame.f_lasti in points:
                self.seen += 1
                if self.seen == self.n:
                    self.fired = True
                    raise KeyboardInterrupt
        return self._local

    def __call__(self, frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename != _PIPELINE_FILE:
            return None
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        return self._local


def _close_within(wal: segwal.Wal, seconds: float) -> BaseException | None:
    """Close on another thread; a close that hangs (a job nobody will finish) fails."""
    outcome: list[BaseException | None] = []

    def close() -> None:
        try:
            wal.close()
            outcome.append(None)
        except BaseException as exc:  # returned to the test
            outcome.append(exc)

    thread = threading.Thread(target=close, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "close() hangs after the interrupt"
    return outcome[0]


def _run(path: Path, n: int) -> bool:
    """One run interrupted at line ``n``; False when the run ended before line ``n``."""
    calls = _calls()
    wal = segwal.open(
        path,
        sync="never",
        compression="zstd",
        compression_threads=1,
        buffer_bytes=8000,
    )
    acknowledged: list[bytes] = []
    interrupted: list[bytes] | None = None
    failed = False
    tracer = _Interrupt(n)
    sys.settrace(tracer)
    try:
        for kind, records in calls:
            try:
                if kind == "batch":
                    wal.append_batch(records)
                else:
                    wal.append(records[0])
            except KeyboardInterrupt:
                interrupted = records
                break
            except WalFailedError:  # an interrupt split a write: loud, and for every call
                failed = True
                interrupted = records
                break
            acknowledged.extend(records)
        else:
            try:
                wal.sync()
            except KeyboardInterrupt:
                interrupted = []
    finally:
        sys.settrace(None)
    marker = [_record(10**6, 2000) for _ in range(10)]
    try:
        wal.append_batch(marker)  # the log goes on after a Ctrl-C the caller caught
    except WalFailedError:
        failed = True
    if failed:
        marker = []
    stats = wal.stats()  # before close: a failed close does not count what it dropped
    error = _close_within(wal, 30)
    if error is not None:
        assert isinstance(error, WalFailedError), error
        failed = True
    with segwal.open(path, readonly=True) as reader:
        got = [r.payload for r in reader.replay()]
        lsns = [r.lsn for r in reader.replay()]
    assert lsns == list(range(1, len(lsns) + 1))
    if failed:
        # Loud: what is there is a prefix of what was appended, in order, each once.
        everything = acknowledged + (interrupted or []) + marker
        assert got == everything[: len(got)]
    else:
        allowed = [acknowledged + marker]
        if interrupted:
            allowed.append(acknowledged + interrupted + marker)
        assert got in allowed, (n, len(got), len(acknowledged))
        # Every acknowledged record counted, nothing counted that is not in the file (an
        # interrupt between queueing a burst and counting it once skipped the count).
        assert len(acknowledged) + len(marker) <= stats.records <= len(got), (n, stats)
    return tracer.fired


def test_an_interrupt_at_any_line_loses_no_acknowledged_batch_and_keeps_order(
    tmp_path: Path,
) -> None:
    n = 1
    while _run(tmp_path / f"log{n}", n):
        n += 1
    assert n > 50  # the runs went through the pipeline's code, not around it
