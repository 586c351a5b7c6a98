"""A readonly reader racing a healthy writer's checkpoints never calls the log corrupt
(issue 13, #10): it retries, or says it fell behind.

The writer appends and checkpoints (``truncate_before``) every few records while readers
in another thread and another process keep looking; any ``CorruptionError`` (a
``ContinuityError`` from a listing taken between the writer's META update and its
deletions, say) is a false alarm.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import segwal

READER = """
import sys, time, segwal
path, seconds = sys.argv[1], float(sys.argv[2])
errors = {}
deadline = time.monotonic() + seconds
looks = 0
with segwal.open(path, readonly=True) as ro:
    while time.monotonic() < deadline:
        try:
            ro.refresh()
            if ro.last_lsn >= ro.first_lsn:
                ro.read(ro.last_lsn)
            looks += 1
        except (segwal.ReaderFellBehindError, segwal.NotFoundError):
            pass
        except segwal.SegwalError as exc:
            errors[type(exc).__name__] = str(exc)
print(looks, errors)
sys.exit(1 if errors else 0)
"""


def _writer(path: Path, stop: threading.Event) -> None:
    with segwal.open(path, segment_bytes=1024, sync="never") as wal:
        while not stop.is_set():
            for _ in range(8):
                wal.append(b"x" * 100)
            wal.sync()
            wal.truncate_before(max(wal.first_lsn, wal.last_lsn - 10))


def test_readonly_readers_racing_checkpoints_see_no_corruption(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with segwal.open(path, segment_bytes=1024) as wal:
        wal.append(b"first")
    stop = threading.Event()
    writer = threading.Thread(target=_writer, args=(path, stop))
    writer.start()
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", READER, str(path), "2.0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        errors: dict[str, str] = {}
        looks = 0
        deadline = time.monotonic() + 2.0
        with segwal.open(path, readonly=True) as ro:
            while time.monotonic() < deadline:
                try:
                    ro.refresh()
                    looks += 1
                except (segwal.ReaderFellBehindError, segwal.NotFoundError):
                    pass
                except segwal.SegwalError as exc:
                    errors[type(exc).__name__] = str(exc)
        out, err = child.communicate(timeout=60)
    finally:
        stop.set()
        writer.join(30)
    assert looks > 10
    assert errors == {}
    assert child.returncode == 0, (out, err)
    info = subprocess.run(
        [sys.executable, "-m", "segwal", "info", str(path)], capture_output=True, text=True
    )
    assert info.returncode == 0, info.stderr
