"""The throwaway Ceph's command line: start, env, stop, and nothing left running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cephlib

SCRIPT = str(Path(__file__).resolve().parent / "cephlib.py")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie is dead, waiting for its (re)parent to reap it


def test_the_command_line_starts_serves_and_stops(ceph: cephlib.Cluster, tmp_path: Path) -> None:
    # ``ceph`` (the session's cluster) only makes this skip or fail like the other Ceph tests.
    started = subprocess.run(
        [sys.executable, SCRIPT, "start", str(tmp_path / "c")], capture_output=True, text=True
    )
    assert started.returncode == 0, started.stderr
    info = json.loads(started.stdout)
    try:
        assert len(info["pids"]) == 3 and all(alive(pid) for pid in info["pids"])
        env = subprocess.run(
            [sys.executable, SCRIPT, "env", str(tmp_path / "c"), "--tls"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f"export AWS_ENDPOINT_URL={info['https']}\n" in env
        assert f"export AWS_CA_BUNDLE={info['ca_bundle']}\n" in env
        from segwal.archive.urls import open_store, probe

        variables = dict(line[len("export ") :].split("=", 1) for line in env.splitlines())
        store = open_store(
            "s3://cli-bucket/x",
            endpoint_url=variables["AWS_ENDPOINT_URL"],
            access_key_id=variables["AWS_ACCESS_KEY_ID"],
            secret_access_key=variables["AWS_SECRET_ACCESS_KEY"],
            ca_bundle=variables["AWS_CA_BUNDLE"],
        )
        import boto3

        boto3.client(
            "s3",
            endpoint_url=info["http"],
            aws_access_key_id=info["access_key"],
            aws_secret_access_key=info["secret_key"],
            region_name="us-east-1",
        ).create_bucket(Bucket="cli-bucket")
        probe(store)
        store.close()
    finally:
        subprocess.run([sys.executable, SCRIPT, "stop", str(tmp_path / "c")], check=True)
    assert not any(alive(pid) for pid in info["pids"])


def test_missing_programs_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert cephlib.missing() == list(cephlib.BINARIES)
    with pytest.raises(cephlib.CephError, match="apt-get install"):
        cephlib.start(tmp_path / "c")
    assert not (tmp_path / "c").exists()
    assert os.environ["PATH"] == str(tmp_path)


def test_the_watchdog_kills_a_cluster_whose_owner_was_killed(
    ceph: cephlib.Cluster, tmp_path: Path
) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(Path(__file__).resolve().parent), str(tmp_path / "c")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert owner.stdout is not None
    pids = [int(pid) for pid in owner.stdout.readline().split()]
    assert len(pids) == 3 and all(alive(pid) for pid in pids)
    owner.kill()
    owner.wait()
    owner.stdout.close()
    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in pids)


OWNER = """
import sys, time
sys.path.insert(0, sys.argv[1])
import cephlib
cluster = cephlib.start(sys.argv[2], watchdog=True)
print(*cluster.pids, flush=True)
time.sleep(600)
"""
