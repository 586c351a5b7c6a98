"""Every archive feature against a real S3 server: Ceph RGW over plain HTTP and over TLS
(``ceph_s3`` runs each test twice), through ``s3://`` URLs and the AWS variables, the way a
user runs it: the uploader, restore (latest, an LSN, a time), the restored ``dump --json``
equal to the original, verify naming a damaged object, the mirror, push beside a live
writer, a new generation after a restore, and a prefix of another log refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import segwal
from ceph_fixture import CephS3
from conftest import payload
from segwal.archive.objects import parse_segment_key

SEGWAL = [sys.executable, "-m", "segwal"]


def run(ceph: CephS3, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*SEGWAL, *args],
        env={**os.environ, **ceph.env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"segwal {' '.join(args)}: {done.returncode}\n{done.stderr}")
    return done


def dump(path: Path) -> list[object]:
    out = subprocess.run([*SEGWAL, "dump", "--json", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_archive_many_segments_then_restore_anywhere(ceph_s3: CephS3, tmp_path: Path) -> None:
    """1,000 small segments up (one record each; 300 over TLS, slower here), then restore
    to the newest, an LSN and a time, by
    the API and the command line; each restored dump equals the original's prefix."""
    opts = {"archive_options": ceph_s3.options, "archive_poll_interval": 0.05}
    with segwal.open(
        tmp_path / "log", archive=ceph_s3.url, segment_bytes=512, sync="never", **opts
    ) as wal:
        count = 300 if ceph_s3.tls else 1000
        for lsn in range(1, count + 1):
            wal.append(payload(lsn, 100))
        wal.rotate()
        assert wal.wait_archived(count, timeout=300), wal.archive_status()
        status = wal.archive_status()
        assert status.last_error is None and status.uploads == count
        moment = wal.read(count * 3 // 4).timestamp_us
    original = dump(tmp_path / "log")
    result = segwal.restore(ceph_s3.url, tmp_path / "latest", archive_options=ceph_s3.options)
    assert result.segments == status.uploads and dump(tmp_path / "latest") == original
    run(ceph_s3, "restore", ceph_s3.url, str(tmp_path / "cut"), "--to-lsn", "77")
    assert dump(tmp_path / "cut") == original[:77]
    stamp = f"{moment / 1e6:.6f}"
    from datetime import UTC, datetime

    iso = datetime.fromtimestamp(float(stamp), tz=UTC).isoformat()
    done = run(ceph_s3, "restore", ceph_s3.url, str(tmp_path / "timed"), "--to-time", iso, "--json")
    timed = json.loads(done.stdout)
    assert (
        timed["last_lsn"] >= count * 3 // 4
        and dump(tmp_path / "timed") == original[: timed["last_lsn"]]
    )
    refused = run(ceph_s3, "restore", ceph_s3.url, str(tmp_path / "cut"), check=False)
    assert refused.returncode == 2 and "not an empty directory" in refused.stderr
    listing = json.loads(run(ceph_s3, "archive", "ls", ceph_s3.url, "--json").stdout)
    assert len(listing["generations"]) == 1
    verdict = json.loads(run(ceph_s3, "archive", "verify", ceph_s3.url, "--json").stdout)
    assert verdict["ok"] and verdict["objects"] == status.uploads


def test_damage_is_named_and_a_rewritten_history_gets_a_generation(
    ceph_s3: CephS3, tmp_path: Path
) -> None:
    opts = {"archive_options": ceph_s3.options, "archive_poll_interval": 0.05}
    with segwal.open(tmp_path / "log", archive=ceph_s3.url, segment_bytes=4096, **opts) as wal:
        for lsn in range(1, 201):
            wal.append(payload(lsn, 100))
        wal.rotate()
        assert wal.wait_archived(200, timeout=60)
        first = wal.archive_status().generation
    restored = segwal.restore(
        ceph_s3.url, tmp_path / "r", to_lsn=100, archive_options=ceph_s3.options
    )
    with segwal.open(restored.path, archive=ceph_s3.url, **opts) as wal:
        wal.append(b"a branch")
        wal.rotate()
        assert wal.wait_archived(101, timeout=60)
        second = wal.archive_status().generation
    assert second not in (None, first)
    again = segwal.restore(ceph_s3.url, tmp_path / "again", archive_options=ceph_s3.options)
    assert again.generation == second and again.last_lsn == 101
    # A flipped byte in one object: restore and verify name it.
    store = ceph_s3.store()
    keys = [i.key for i in store.list("g/") if parse_segment_key(i.key)]
    victim = next(k for k in keys if k.startswith(f"g/{first}/"))
    data = bytearray(store.get(victim))
    data[300] ^= 0xFF
    info = store.head(victim)
    assert info is not None
    store.put(victim, bytes(data), info.metadata)
    done = run(ceph_s3, "archive", "verify", ceph_s3.url, check=False)
    assert done.returncode == 1 and victim in done.stdout
    with pytest.raises(segwal.ArchiveCorruptError) as caught:
        segwal.restore(ceph_s3.url, tmp_path / "bad", archive_options=ceph_s3.options)
    assert caught.value.key == victim and not (tmp_path / "bad").exists()
    # Another log pointed at this prefix is refused.
    with pytest.raises(segwal.ArchiveConflictError, match="another log"):
        segwal.open(tmp_path / "other", archive=ceph_s3.url, **opts)
    store.close()


def test_mirror_and_push_beside_a_live_writer(ceph_s3: CephS3, tmp_path: Path) -> None:
    with segwal.open(tmp_path / "log", segment_bytes=4096) as wal:
        for lsn in range(1, 151):
            wal.append(payload(lsn, 100))
        wal.rotate()
        done = run(ceph_s3, "archive", "push", str(tmp_path / "log"), ceph_s3.url, "--json")
        pushed = json.loads(done.stdout)
        assert pushed["archived_lsn"] == 150
        assert wal.holds()["cursor:archive"] == 151  # retention waits for the archive
        run(ceph_s3, "mirror", ceph_s3.url, str(tmp_path / "m"))
        for lsn in range(151, 301):
            wal.append(payload(lsn, 100))
        wal.rotate()
        run(ceph_s3, "archive", "push", str(tmp_path / "log"), ceph_s3.url)
        status = json.loads(
            run(ceph_s3, "archive", "status", str(tmp_path / "log"), "--json").stdout
        )
        assert status["archived_lsn"] == 300 and status["lag_segments"] == 0
        update = json.loads(
            run(ceph_s3, "mirror", ceph_s3.url, str(tmp_path / "m"), "--json").stdout
        )
        assert update["last_lsn"] == 300
    assert dump(tmp_path / "m") == dump(tmp_path / "log")
    with segwal.open(tmp_path / "m", readonly=True) as view:
        assert [r.lsn for r in view.follow(290, timeout=0.1)][-1] == 300


def test_archive_retention_on_ceph(ceph_s3: CephS3, tmp_path: Path) -> None:
    opts = {"archive_options": ceph_s3.options, "archive_poll_interval": 0.05}
    with segwal.open(tmp_path / "log", archive=ceph_s3.url, segment_bytes=4096, **opts) as wal:
        for lsn in range(1, 201):
            wal.append(payload(lsn, 100))
        wal.rotate()
        assert wal.wait_archived(200, timeout=60)
    args = ("archive", "prune", ceph_s3.url, "--max-bytes", "10K", "--delay", "2s", "--json")
    planned = json.loads(run(ceph_s3, *args).stdout)
    assert planned["planned"] and not planned["deleted"]
    first = segwal.restore(ceph_s3.url, tmp_path / "r1", archive_options=ceph_s3.options)
    assert first.first_lsn == 1  # planned is not deleted
    time.sleep(2.1)
    done = json.loads(run(ceph_s3, *args).stdout)
    assert done["deleted"] == planned["planned"]
    assert json.loads(run(ceph_s3, "archive", "verify", ceph_s3.url, "--json").stdout)["ok"]
    restored = segwal.restore(ceph_s3.url, tmp_path / "r2", archive_options=ceph_s3.options)
    assert restored.last_lsn == 200 and restored.first_lsn > 1
