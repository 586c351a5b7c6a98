"""Smoke runs on the real I/O path with libfiu: real system calls fail, the log fails closed.

``fiu-run -x`` (Debian package ``fiu-utils``) preloads libfiu's POSIX wrappers into a child
that runs a workload with the venv's Python on real files. The child arms one failure
point at a precise moment through libfiu's C API (``ctypes``; the ``fiu`` Python module of
``python3-fiu`` is built for the system Python, not necessarily this one), so the fault
hits exactly the call the scenario names: the group ``fdatasync`` of an append, a
``pwrite`` (ENOSPC, or cut short), the ``rename`` or directory ``fsync`` of a rotation, the
``fdatasync`` of a seal, recovery's ``ftruncate``. A last scenario lets libfiu fail
``fsync``/``fdatasync`` at random, from the start, across opens and rotations.

The child reports what it saw as JSON; the parent then checks that the failing call raised
``StorageError`` with the injected errno, every later mutation raised ``WalFailedError``,
``durable_lsn`` stayed put, ``close()`` worked, and that reopening the directory (without
libfiu) gives a consistent, byte-exact prefix holding every acknowledged record, after
which appends continue.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import segwal

FIU_RUN = shutil.which("fiu-run")
pytestmark = pytest.mark.skipif(
    FIU_RUN is None, reason="fiu-run is not installed (Debian package fiu-utils)"
)

CHILD = r"""
import ctypes
import errno
import hashlib
import json
import sys

import segwal

FIU_ONETIME = 1


def payload_for(lsn):
    digest = hashlib.sha256(b"fiu/" + str(lsn).encode()).digest()
    return (digest * 8)[: 1 + digest[0] % 200]


lib = ctypes.CDLL("libfiu.so.0")
lib.fiu_enable.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]
lib.fiu_enable.restype = ctypes.c_int


def arm(name, code):
    if lib.fiu_enable(name.encode(), 1, ctypes.c_void_p(code), FIU_ONETIME) != 0:
        raise SystemExit(f"fiu_enable({name}) failed")


scenario, path = sys.argv[1], sys.argv[2]
report = {"acked": 0, "appended": 0, "attempted": 0, "events": []}
note = report["events"].append


def append(wal, count):
    first = wal.next_lsn
    report["attempted"] = first + count - 1  # a failed append may or may not be there
    lsns = wal.append_batch([payload_for(n) for n in range(first, first + count)])
    assert lsns == range(first, first + count), (lsns, first)
    report["appended"] = lsns[-1]
    return lsns


def acknowledge(wal):
    report["acked"] = max(report["acked"], wal.durable_lsn)


def fails_closed(wal, call):
    durable = wal.durable_lsn
    try:
        call()
    except segwal.StorageError as exc:
        note({"failed": type(exc).__name__, "errno": exc.errno})
    except Exception as exc:
        note({"failed": type(exc).__name__, "errno": getattr(exc, "errno", None)})
    else:
        note({"failed": None})
        return
    later = []
    for name, mutate in [
        ("append", lambda: wal.append(b"late")),
        ("append_batch", lambda: wal.append_batch([b"late"])),
        ("sync", wal.sync),
        ("rotate", wal.rotate),
        ("truncate_before", lambda: wal.truncate_before(wal.first_lsn)),
    ]:
        try:
            mutate()
            later.append([name, None])
        except Exception as exc:
            later.append([name, type(exc).__name__])
    note({"later": later, "durable_moved": wal.durable_lsn != durable})
    wal.close()
    note({"closed": wal.closed, "durable_moved_on_close": wal.durable_lsn != durable})


if scenario == "random":
    # libfiu fails fsync/fdatasync at random from the start; keep going until it does.
    try:
        wal = segwal.open(path, segment_bytes=4096)
    except segwal.StorageError as exc:
        note({"open_failed": exc.errno})
    else:
        while report["appended"] < 3000:
            try:
                append(wal, 1 + report["appended"] % 4)
            except segwal.StorageError as exc:
                note({"failed": type(exc).__name__, "errno": exc.errno})
                break
            acknowledge(wal)
        else:
            note({"failed": None})
        fails_closed(wal, lambda: wal.append(b"after"))
        if not wal.closed:
            wal.close()
            acknowledge(wal)
    print(json.dumps(report))
    raise SystemExit(0)

wal = segwal.open(path, segment_bytes=4096, sync="always")
for _ in range(6):
    append(wal, 3)
    acknowledge(wal)

if scenario == "append-fdatasync":
    arm("posix/io/sync/fdatasync", errno.EIO)
    fails_closed(wal, lambda: append(wal, 2))
elif scenario == "append-pwrite-enospc":
    arm("posix/io/rw/pwrite", errno.ENOSPC)
    fails_closed(wal, lambda: append(wal, 2))
elif scenario == "append-pwrite-short":
    # A short write is finished by the seam, not an error: the log stays healthy.
    arm("posix/io/rw/pwrite/reduce", 0)
    append(wal, 5)
    acknowledge(wal)
    append(wal, 1)
    acknowledge(wal)
    wal.close()
    acknowledge(wal)
elif scenario == "rotate-rename":
    arm("posix/io/dir/rename", errno.EIO)
    fails_closed(wal, wal.rotate)
elif scenario == "rotate-dir-fsync":
    arm("posix/io/sync/fsync", errno.EIO)
    fails_closed(wal, wal.rotate)
elif scenario == "seal-fdatasync":
    arm("posix/io/sync/fdatasync", errno.EIO)
    fails_closed(wal, wal.rotate)
elif scenario == "recovery-ftruncate":
    tail = wal.segments()[-1].path
    wal.close()
    acknowledge(wal)
    with open(tail, "ab") as f:  # a torn write for recovery to cut
        f.write(b"\x01" * 40)
    arm("posix/io/rw/ftruncate", errno.EIO)
    try:
        segwal.open(path)
    except segwal.StorageError as exc:
        note({"failed": type(exc).__name__, "errno": exc.errno})
    else:
        note({"failed": None})
else:
    raise SystemExit(f"unknown scenario {scenario}")

print(json.dumps(report))
"""


def payload_for(lsn: int) -> bytes:
    import hashlib

    digest = hashlib.sha256(b"fiu/" + str(lsn).encode()).digest()
    return (digest * 8)[: 1 + digest[0] % 200]


def run_child(tmp_path: Path, scenario: str, *commands: str) -> dict[str, Any]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    assert FIU_RUN is not None
    cmd = [FIU_RUN, "-x", "-f", ""]
    for command in commands:
        cmd += ["-c", command]
    cmd += [sys.executable, "-B", str(script), scenario, str(tmp_path / "wal")]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if run.returncode != 0 and "fiu_enable" in run.stderr + run.stdout:
        pytest.skip(f"libfiu is not usable here: {run.stderr.strip()[-300:]}")
    assert run.returncode == 0, f"child failed ({run.returncode}):\n{run.stdout}\n{run.stderr}"
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no report from the child:\n{run.stdout}\n{run.stderr}"
    report: dict[str, Any] = json.loads(lines[-1])
    return report


def check_directory(path: Path, acked: int) -> int:
    """Reopen without libfiu: a byte-exact prefix with every acknowledged record, a second
    reopen that agrees, and appends that continue. Returns the last LSN."""
    with segwal.open(path) as wal:
        records = [(r.lsn, r.payload) for r in wal.replay()]
        first, last = wal.first_lsn, wal.last_lsn
    assert [lsn for lsn, _ in records] == list(range(first, last + 1))
    assert first == 1 and last >= acked, (first, last, acked)  # nothing acknowledged lost
    for lsn, data in records:
        assert data == payload_for(lsn), f"LSN {lsn} differs"
    with segwal.open(path) as wal:
        assert [(r.lsn, r.payload) for r in wal.replay()] == records
        assert not wal.recovery.cuts
        assert wal.append(b"after") == last + 1
    return last


def assert_failed_closed(report: dict[str, Any], code: int) -> None:
    events = report["events"]
    failed = next(e for e in events if "failed" in e)
    assert failed == {"failed": "StorageError", "errno": code}, events
    later = next(e for e in events if "later" in e)
    assert all(error == "WalFailedError" for _, error in later["later"]), later
    assert not later["durable_moved"], events
    closed = next(e for e in events if "closed" in e)
    assert closed == {"closed": True, "durable_moved_on_close": False}, events


@pytest.mark.parametrize(
    ("scenario", "code"),
    [
        ("append-fdatasync", 5),
        ("append-pwrite-enospc", 28),
        ("rotate-rename", 5),
        ("rotate-dir-fsync", 5),
        ("seal-fdatasync", 5),
    ],
)
def test_real_failure_fails_closed(tmp_path: Path, scenario: str, code: int) -> None:
    report = run_child(tmp_path, scenario)
    assert report["acked"] >= 18
    assert_failed_closed(report, code)
    last = check_directory(tmp_path / "wal", report["acked"])
    assert last <= report["attempted"]
    if scenario == "rotate-rename":
        assert not [p for p in os.listdir(tmp_path / "wal") if p.endswith(".tmp")]


def test_short_pwrite_is_completed(tmp_path: Path) -> None:
    report = run_child(tmp_path, "append-pwrite-short")
    assert not report["events"]
    assert report["acked"] == report["appended"] == 24
    assert check_directory(tmp_path / "wal", report["acked"]) == 24


def test_recovery_ftruncate_failure(tmp_path: Path) -> None:
    report = run_child(tmp_path, "recovery-ftruncate")
    assert report["events"] == [{"failed": "StorageError", "errno": 5}]
    # Nothing was cut yet, or the cut did not count: a clean reopen cuts it now.
    with segwal.open(tmp_path / "wal") as wal:
        assert wal.recovery.cuts
    check_directory(tmp_path / "wal", report["acked"])


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        pytest.param("posix/io/sync/*", 5, id=f"sync-{n}")
        for n in range(3)  # fsync and fdatasync: every barrier of every protocol
    ]
    + [pytest.param("posix/io/rw/pwrite", 28, id=f"pwrite-{n}") for n in range(2)],
)
def test_random_failures(tmp_path: Path, spec: str, code: int) -> None:
    """libfiu fails real calls at random from the start (opens and rotations included);
    whatever failed, the log fails closed, nothing acknowledged is lost, and it reopens."""
    report = run_child(
        tmp_path, "random", f"enable_random name={spec},probability=0.02,failinfo={code}"
    )
    events = report["events"]
    if events and "open_failed" in events[0]:
        assert events[0]["open_failed"] == code
    elif events[0]["failed"] is not None:
        assert_failed_closed(report, code)
    if (tmp_path / "wal").exists():
        last = check_directory(tmp_path / "wal", report["acked"])
        assert last <= report["attempted"]
