"""The archive commands' exit codes and output on a ``file://`` store (issue 12); the same
commands run against Ceph in ``tests/test_archive_ceph.py``."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

import segwal
from conftest import payload
from segwal.archive.urls import open_store
from segwal.cli import main


def archived(tmp_path: Path) -> str:
    url = (tmp_path / "archive").as_uri()
    with segwal.open(
        tmp_path / "log", archive=url, segment_bytes=4096, archive_poll_interval=0.02
    ) as wal:
        for lsn in range(1, 201):
            wal.append(payload(lsn, 100))
        wal.rotate()
        assert wal.wait_archived(200, timeout=30)
    return url


def test_restore_verify_ls_status_and_their_exit_codes(tmp_path: Path) -> None:
    url = archived(tmp_path)
    runner = CliRunner()
    done = runner.invoke(main, ["restore", url, str(tmp_path / "r"), "--to-lsn", "50"])
    assert done.exit_code == 0, done.output
    assert "newest of 1 holding LSN 50" in done.output and "LSNs 1..50" in done.output
    again = runner.invoke(main, ["restore", url, str(tmp_path / "r")])
    assert again.exit_code == 2 and "not an empty directory" in again.output
    listing = json.loads(runner.invoke(main, ["archive", "ls", url, "--json"]).output)
    (generation,) = listing["generations"]
    assert generation["parent"] is None and len(generation["segments"]) >= 5
    status = runner.invoke(main, ["archive", "status", str(tmp_path / "log"), "--json"])
    assert json.loads(status.output)["archived_lsn"] == 200
    ok = runner.invoke(main, ["archive", "verify", url])
    assert ok.exit_code == 0 and "archive verify: ok" in ok.output
    victim = generation["segments"][1]["key"]
    store = open_store(url)
    info = store.head(victim)
    assert info is not None
    raw = bytearray(store.get(victim))
    raw[400] ^= 0x10
    store.put(victim, bytes(raw), info.metadata)  # a flipped bit under the same name
    store.close()
    bad = runner.invoke(main, ["archive", "verify", url])
    assert bad.exit_code == 1 and generation["segments"][1]["key"] in bad.output
    failed = runner.invoke(main, ["restore", url, str(tmp_path / "r2")])
    assert failed.exit_code == 1 and "digest" in failed.output
    empty = runner.invoke(main, ["restore", (tmp_path / "none").as_uri(), str(tmp_path / "r3")])
    assert empty.exit_code == 3 and "empty" in empty.output
    both = runner.invoke(
        main,
        [
            "restore",
            url,
            str(tmp_path / "r4"),
            "--to-lsn",
            "1",
            "--to-time",
            "2026-01-01T00:00:00Z",
        ],
    )
    assert both.exit_code == 2


def test_push_and_mirror_commands(tmp_path: Path) -> None:
    url = (tmp_path / "archive").as_uri()
    with segwal.open(tmp_path / "log", segment_bytes=4096) as wal:
        for lsn in range(1, 101):
            wal.append(payload(lsn, 100))
        wal.rotate()
        runner = CliRunner()
        pushed = runner.invoke(main, ["archive", "push", str(tmp_path / "log"), url])
        assert pushed.exit_code == 0 and "archived    LSN 100 of 100" in pushed.output
        mirrored = runner.invoke(main, ["mirror", url, str(tmp_path / "m")])
        assert mirrored.exit_code == 0 and "LSNs 1..100" in mirrored.output
    with segwal.open(tmp_path / "m", readonly=True) as view:
        assert [r.payload for r in view.replay()] == [payload(n, 100) for n in range(1, 101)]
    other = runner.invoke(main, ["mirror", (tmp_path / "else").as_uri(), str(tmp_path / "m")])
    assert other.exit_code == 2 and "mirrors" in other.output
