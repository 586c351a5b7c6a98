"""The archive's files in a log directory (``ARCHIVE.state``, ``MIRROR.state``,
``RESTORE.plan`` and their ``{pid}.tmp`` temp files) are in the directory grammar
(docs/FORMAT.md): recovery, ``segwal info`` and ``verify`` do not call them foreign, and the
log never deletes them, a leftover temp file of a live ``archive push`` included."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import segwal
from conftest import payload
from segwal.archive.memory import MemoryStore
from segwal.format.naming import Kind, parse

FAST = {"archive_poll_interval": 0.02, "segment_bytes": 4096}


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("ARCHIVE.state", Kind.ARCHIVE),
        ("MIRROR.state", Kind.ARCHIVE),
        ("RESTORE.plan", Kind.ARCHIVE),
        ("ARCHIVE.state.4242.tmp", Kind.ARCHIVE),
        ("MIRROR.state.1.tmp", Kind.ARCHIVE),
        ("RESTORE.plan.77.tmp", Kind.ARCHIVE),
        ("ARCHIVE.state.tmp", Kind.FOREIGN),  # no pid: not a name the archive writes
        ("ARCHIVE.state.12x.tmp", Kind.FOREIGN),
        ("ARCHIVE.state.١٢.tmp", Kind.FOREIGN),  # non-ASCII digits
        ("archive.state", Kind.FOREIGN),
        ("ARCHIVE", Kind.FOREIGN),
        ("KEYS.tmp", Kind.TEMP),
    ],
)
def test_the_grammar_knows_the_archive_names(name: str, kind: Kind) -> None:
    assert parse(name).kind is kind


def info(path: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "segwal", "info", "--json", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def foreign_in(report: object) -> list[str]:
    text = json.dumps(report)
    return [n for n in ("ARCHIVE.state", "MIRROR.state", "4242.tmp") if n in text]


def test_archived_and_mirrored_logs_have_no_foreign_files(tmp_path: Path) -> None:
    store = MemoryStore()
    log = tmp_path / "log"
    with segwal.open(log, archive=store, **FAST) as wal:  # type: ignore[arg-type]
        for lsn in range(1, 101):
            wal.append(payload(lsn, 100))
        wal.rotate()
        assert wal.wait_archived(100, timeout=30)
    leftover = log / "ARCHIVE.state.4242.tmp"  # as a live `archive push` could have it
    leftover.write_bytes(b"{}")
    assert (log / "ARCHIVE.state").is_file()
    with segwal.open(log) as wal:
        assert wal.recovery.foreign_files == () and wal.recovery.clean
        assert str(leftover) not in wal.recovery.removed_temp_files
    assert leftover.read_bytes() == b"{}"  # the log never deletes the archive's files
    assert foreign_in(info(log)) == []
    assert segwal.verify(log).ok
    segwal.mirror(store, tmp_path / "mirror")
    assert (tmp_path / "mirror" / "MIRROR.state").is_file()
    with segwal.open(tmp_path / "mirror", readonly=True) as wal:
        assert wal.recovery.foreign_files == ()
    assert foreign_in(info(tmp_path / "mirror")) == []
    assert segwal.verify(tmp_path / "mirror").ok
    # A directory under an archive name is not the archive's file: foreign, named.
    leftover.unlink()
    (log / "MIRROR.state").mkdir()
    with segwal.open(log) as wal:
        assert wal.recovery.foreign_files == (str(log / "MIRROR.state"),)
