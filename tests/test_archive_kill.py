"""SIGKILL a writer that archives, again and again, at random instants (issue 12).

The writer appends with ``sync="always"``, rotates every few records, archives to a
``file://`` store and lets retention delete what the archive holds. Whatever instant it
dies (before a PUT, after a PUT whose answer it never saw, before or after META's fsync,
between META and the local delete), after every kill:

- nothing is missing: the local log starts where the archive's contiguous chain ends or
  earlier (retention never deleted an unarchived segment);
- nothing acknowledged is lost;

and at the end, after a clean run that archives the rest, the archive verifies, holds one
generation with exactly one object per segment, and restores to the exact records.
"""

from __future__ import annotations

import itertools
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import segwal
from conftest import payload
from segwal.archive.objects import parse_segment_key
from segwal.archive.urls import open_store

CHILD = """
import sys, segwal
import pytest
from conftest import payload
wal = segwal.open(sys.argv[1], archive=sys.argv[2], segment_bytes=1024,
                  retention_max_bytes=4096, archive_poll_interval=0.01)
lsn = wal.next_lsn
while True:
    wal.append(payload(lsn, 90))
    print(lsn, flush=True)
    lsn += 1
"""


def archived_chain(url: str) -> list[tuple[int, int]]:
    """(first LSN, last LSN) of every segment object, in LSN order (one generation)."""
    store = open_store(url)
    try:
        found = []
        for info in store.list("g/"):
            key = parse_segment_key(info.key)
            if key is not None:
                head = store.head(info.key)
                assert head is not None
                found.append((key[1], int(head.metadata["last-lsn"])))
        return sorted(found)
    finally:
        store.close()


def test_sigkill_loop_never_loses_or_duplicates(tmp_path: Path) -> None:
    log, url = str(tmp_path / "log"), (tmp_path / "archive").as_uri()
    tests = str(Path(__file__).parent)
    rng = random.Random(12)
    acknowledged = pruned = 0
    for _round in range(8):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, log, url],
            stdout=subprocess.PIPE,
            text=True,
            cwd=tests,
            env={"PYTHONPATH": tests, "PATH": "/usr/bin:/bin"},
        )
        time.sleep(rng.uniform(0.4, 1.5))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate(timeout=60)
        lines = out.split()
        if lines:
            acknowledged = max(acknowledged, int(lines[-1]))
        with segwal.open(log, readonly=True) as view:
            first = view.first_lsn
            assert view.last_lsn >= acknowledged  # nothing acknowledged is lost
        chain = archived_chain(url)
        for (_a, last), (b, _last) in itertools.pairwise(chain):
            assert b == last + 1, chain  # contiguous: one object per segment, no gap
        if first > 1:  # retention deleted LSNs 1..first-1: the archive must hold them
            assert chain and chain[0][0] == 1 and chain[-1][1] >= first - 1, (first, chain)
            pruned += 1
    assert pruned and acknowledged  # the rounds did write, archive and delete locally
    with segwal.open(log, archive=url, archive_poll_interval=0.01, segment_bytes=1024) as wal:
        wal.rotate()
        assert wal.wait_archived(wal.last_lsn, timeout=120), wal.archive_status()
        last = wal.last_lsn
        assert wal.archive_status().generation is not None
    report = segwal.verify_archive(url)
    assert report.ok, report.problems
    listing = segwal.list_archive(url)
    assert len(listing.generations) == 1  # a crash is not a rewind: no new generation
    (name,) = listing.generations
    starts = [s.first_lsn for s in listing.segments[name]]
    assert len(starts) == len(set(starts)) == report.objects  # one object per segment
    restored = segwal.restore(url, tmp_path / "restored")
    assert restored.last_lsn == last >= acknowledged
    with segwal.open(restored.path, readonly=True) as view:
        assert all(r.payload == payload(r.lsn, 90) for r in view.replay())
        assert view.first_lsn == 1


CRASHING_CHILD = """
import os, sys, segwal
import pytest
from conftest import payload
from segwal.archive import uploader
from segwal.archive.urls import open_store

point, log, url = sys.argv[1], sys.argv[2], sys.argv[3]
inner = open_store(url)
seen = {"puts": 0, "saves": 0}

class Crashing:
    url = inner.url
    def __getattr__(self, name):
        return getattr(inner, name)
    def put_if_absent(self, key, data, metadata=None):
        if "/seg/" in key:
            seen["puts"] += 1
            if seen["puts"] == 3 and point == "before_put":
                os._exit(137)
            created = inner.put_if_absent(key, data, metadata)
            if seen["puts"] == 3 and point == "after_put":
                os._exit(137)  # stored; the answer never arrives
            return created
        return inner.put_if_absent(key, data, metadata)

save = uploader.Position.save
def crashing_save(self, lsn):
    seen["saves"] += 1
    if seen["saves"] == 4 and point == "before_meta":
        os._exit(137)
    save(self, lsn)
    if seen["saves"] == 4 and point == "after_meta":
        os._exit(137)  # META says archived; retention has not deleted anything yet
uploader.Position.save = crashing_save

wal = segwal.open(log, archive=Crashing(), segment_bytes=1024, retention_max_bytes=2048,
                  archive_poll_interval=0.01, archive_probe=False)
lsn = wal.next_lsn
while True:
    wal.append(payload(lsn, 90))
    print(lsn, flush=True)
    lsn += 1
"""


@pytest.mark.parametrize("point", ["before_put", "after_put", "before_meta", "after_meta"])
def test_each_crash_point_between_upload_meta_and_delete(tmp_path: Path, point: str) -> None:
    log, url = str(tmp_path / "log"), (tmp_path / "archive").as_uri()
    tests = str(Path(__file__).parent)
    child = subprocess.run(
        [sys.executable, "-c", CRASHING_CHILD, point, log, url],
        capture_output=True,
        text=True,
        cwd=tests,
        env={"PYTHONPATH": tests, "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert child.returncode == 137, child.stderr
    acknowledged = int(child.stdout.split()[-1])
    with segwal.open(log, readonly=True) as view:
        assert view.last_lsn >= acknowledged
        first = view.first_lsn
    chain = archived_chain(url)
    assert not chain or chain[0][0] == 1
    assert first == 1 or chain[-1][1] >= first - 1  # nothing unarchived was deleted
    with segwal.open(log, archive=url, archive_poll_interval=0.01, segment_bytes=1024) as wal:
        wal.rotate()
        assert wal.wait_archived(wal.last_lsn, timeout=60), wal.archive_status()
        last = wal.last_lsn
    report = segwal.verify_archive(url)
    assert report.ok and len(segwal.list_archive(url).generations) == 1
    chain = archived_chain(url)
    assert [a for a, _ in chain] == sorted({a for a, _ in chain})  # one object per segment
    for (_a, end), (b, _end) in itertools.pairwise(chain):
        assert b == end + 1
    restored = segwal.restore(url, tmp_path / "restored")
    assert restored.last_lsn == last >= acknowledged
    with segwal.open(restored.path, readonly=True) as view:
        assert [r.payload for r in view.replay()] == [payload(n, 90) for n in range(1, last + 1)]
