"""Encrypted logs in the archive (issue 12): the wrapped keys (``keys/<digest>.keys``) go up
before any segment encrypted under them and again after a rewrap or a new log key; a
restore or a mirror elsewhere needs only the key-encryption key, a wrong one is
``WrongKeyError``; restore and verify need no key at all (CRC, digests and chain are still
checked); archive retention never deletes a key set. Memory store, and real Ceph RGW (plain
and TLS)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

import segwal
from ceph_fixture import CephS3
from conftest import payload
from segwal.archive.keyobjects import KEYS_PREFIX, parse_keys_key
from segwal.archive.memory import MemoryStore
from segwal.archive.objects import digest_of, parse_segment_key

FAST = {"archive_poll_interval": 0.02, "segment_bytes": 4096}
KEK = bytes(range(32))
KEK2 = bytes(range(100, 132))
SEGWAL = [sys.executable, "-m", "segwal"]


class OrderedStore(MemoryStore):
    """The memory store, remembering the order of conditional creates."""

    def __init__(self) -> None:
        super().__init__()
        self.created: list[str] = []

    def put_if_absent(
        self, key: str, data: bytes, metadata: Mapping[str, str] | None = None
    ) -> bool:
        done = super().put_if_absent(key, data, metadata)
        if done:
            self.created.append(key)
        return done


def key_sets(store: MemoryStore) -> list[str]:
    return sorted(k for k in store.objects if parse_keys_key(k) is not None)


def segments(store: MemoryStore) -> list[str]:
    return sorted(k for k in store.objects if parse_segment_key(k) is not None)


def write(path: Path, store: object, kek: bytes, first: int, count: int, **options: object) -> None:
    with segwal.open(path, archive=store, encryption_key=kek, **FAST, **options) as wal:  # type: ignore[arg-type]
        for lsn in range(first, first + count):
            assert wal.append(payload(lsn, 100)) == lsn
        wal.rotate()
        assert wal.wait_archived(first + count - 1, timeout=30), wal.archive_status()


def records(path: Path, kek: bytes) -> list[tuple[int, bytes]]:
    with segwal.open(path, readonly=True, encryption_key=kek) as wal:
        return [(r.lsn, r.payload) for r in wal.replay()]


def test_keys_go_up_first_and_a_restore_elsewhere_needs_only_the_kek(tmp_path: Path) -> None:
    store = OrderedStore()
    write(tmp_path / "log", store, KEK, 1, 200)
    local = (tmp_path / "log" / "KEYS").read_bytes()
    (only,) = key_sets(store)
    assert only == f"{KEYS_PREFIX}{digest_of(local).hex()}.keys"
    assert store.objects[only].data == local
    first_segment = min(store.created.index(k) for k in segments(store))
    assert store.created.index(only) < first_segment  # before any segment under it
    for key in segments(store):
        assert store.objects[key].metadata["keys"] == digest_of(local).hex()
    original = records(tmp_path / "log", KEK)

    result = segwal.restore(store, tmp_path / "elsewhere")  # no key needed to restore
    assert (tmp_path / "elsewhere" / "KEYS").read_bytes() == local
    assert result.last_lsn == 200 and records(tmp_path / "elsewhere", KEK) == original
    with pytest.raises(segwal.WrongKeyError):
        segwal.open(tmp_path / "elsewhere", readonly=True, encryption_key=KEK2)
    # The restored copy writes with the KEK alone, into a new generation.
    write(tmp_path / "elsewhere", store, KEK, 201, 10)
    assert records(tmp_path / "elsewhere", KEK)[-1][0] == 210
    assert segwal.verify_archive(store).ok


def test_a_rewrap_and_a_new_log_key_are_uploaded_and_restored(tmp_path: Path) -> None:
    store = MemoryStore()
    log = tmp_path / "log"
    write(log, store, KEK, 1, 100)
    segwal.rotate_keys(log, KEK, new_kek=KEK2)  # the old KEK may now be destroyed
    rewrapped = (log / "KEYS").read_bytes()
    with segwal.open(log, archive=store, encryption_key=KEK2, **FAST) as wal:  # type: ignore[arg-type]
        # Uploaded without waiting for a segment: the uploader looks at every poll.
        for _ in range(500):
            if len(key_sets(store)) == 2:
                break
            wal.wait_archived(0, timeout=0.01)
    assert f"{KEYS_PREFIX}{digest_of(rewrapped).hex()}.keys" in key_sets(store)
    segwal.rotate_keys(log, KEK2, new_log_key=True)
    write(log, store, KEK2, 101, 100)
    assert len(key_sets(store)) == 3
    original = records(log, KEK2)
    segwal.restore(store, tmp_path / "r")
    assert records(tmp_path / "r", KEK2) == original  # segments under key 1 and key 2
    with pytest.raises(segwal.WrongKeyError):
        segwal.open(tmp_path / "r", readonly=True, encryption_key=KEK)  # the retired KEK
    # A point before the new log key still takes the newest set that holds its key.
    segwal.restore(store, tmp_path / "early", to_lsn=50, encryption_key=KEK2)
    assert records(tmp_path / "early", KEK2) == original[:50]


def test_restore_and_verify_need_no_key_and_name_missing_or_damaged_keys(tmp_path: Path) -> None:
    store = MemoryStore()
    write(tmp_path / "log", store, KEK, 1, 200)
    original = records(tmp_path / "log", KEK)
    report = segwal.verify_archive(store)  # no key: digests, seals, chain, key sets
    assert report.ok and report.objects == len(segments(store))
    # A cut inside an encrypted segment rewrites it: that alone needs the KEK.
    with pytest.raises(segwal.MissingKeyError):
        segwal.restore(store, tmp_path / "cut", to_lsn=123)
    cut = segwal.restore(store, tmp_path / "cut", to_lsn=123, encryption_key=KEK)  # resumes
    assert cut.last_lsn == 123 and records(tmp_path / "cut", KEK) == original[:123]
    # A segment is damaged: named, with no key involved.
    victim = segments(store)[3]
    body = bytearray(store.objects[victim].data)
    body[200] ^= 1
    store.objects[victim].data = bytes(body)
    assert victim in {p.key for p in segwal.verify_archive(store).problems}
    store.objects[victim].data = bytes(body[:200]) + bytes([body[200] ^ 1]) + bytes(body[201:])
    # A damaged key set is named; with it gone, every encrypted segment is named.
    (keyset,) = key_sets(store)
    good = store.objects[keyset].data
    store.objects[keyset].data = good[:-1] + bytes([good[-1] ^ 1])
    problems = segwal.verify_archive(store).problems
    assert [p.key for p in problems if p.key == keyset] == [keyset]
    assert {p.key for p in problems if p.kind == "missing"} == set(segments(store))
    del store.objects[keyset]
    with pytest.raises(segwal.ArchiveNotFoundError, match=r"log key ids \[1\]"):
        segwal.restore(store, tmp_path / "nokeys")
    assert not (tmp_path / "nokeys").exists()


def test_a_mirror_gets_the_keys_before_the_segments_and_follows_a_rewrap(tmp_path: Path) -> None:
    store = MemoryStore()
    log, copy = tmp_path / "log", tmp_path / "mirror"
    write(log, store, KEK, 1, 100)
    first = segwal.mirror(store, copy)
    assert first.last_lsn == 100 and records(copy, KEK) == records(log, KEK)
    assert (copy / "KEYS").read_bytes() == (log / "KEYS").read_bytes()
    segwal.rotate_keys(log, KEK, new_kek=KEK2)
    write(log, store, KEK2, 101, 50)
    second = segwal.mirror(store, copy)
    assert second.last_lsn == 150 and (copy / "KEYS").read_bytes() == (log / "KEYS").read_bytes()
    assert records(copy, KEK2) == records(log, KEK2)
    with pytest.raises(segwal.WrongKeyError):
        segwal.open(copy, readonly=True, encryption_key=KEK)


def test_archive_retention_keeps_every_key_set(tmp_path: Path) -> None:
    store = MemoryStore()
    log = tmp_path / "log"
    write(log, store, KEK, 1, 200)
    segwal.rotate_keys(log, KEK, new_kek=KEK2)
    write(log, store, KEK2, 201, 100)
    sets = key_sets(store)
    before = len(segments(store))
    segwal.prune_archive(store, max_bytes=6 * 4096, delay=0)
    segwal.prune_archive(store, max_bytes=6 * 4096, delay=0)
    assert len(segments(store)) < before and key_sets(store) == sets
    restored = segwal.restore(store, tmp_path / "r")
    got = records(tmp_path / "r", KEK2)
    assert got == records(log, KEK2)[restored.first_lsn - 1 :]


def test_encrypted_archive_on_ceph(ceph_s3: CephS3, tmp_path: Path) -> None:
    """Against Ceph RGW (plain and TLS): keys up first, restore elsewhere with the KEK only,
    a wrong KEK refused, verify without a key, a rewrap uploaded and restored."""
    opts = {"archive_options": ceph_s3.options}
    log = tmp_path / "log"
    write(log, ceph_s3.url, KEK, 1, 60, **opts)
    listed = ceph_s3.client.list_objects_v2(Bucket=ceph_s3.bucket, Prefix=ceph_s3.prefix)
    names = [o["Key"].removeprefix(ceph_s3.prefix + "/") for o in listed.get("Contents", [])]
    digest = digest_of((log / "KEYS").read_bytes()).hex()
    assert f"{KEYS_PREFIX}{digest}.keys" in names
    segwal.restore(ceph_s3.url, tmp_path / "r", archive_options=ceph_s3.options)
    assert records(tmp_path / "r", KEK) == records(log, KEK)
    with pytest.raises(segwal.WrongKeyError):
        segwal.open(tmp_path / "r", readonly=True, encryption_key=KEK2)
    # The command line: a cut inside an encrypted segment needs --kek-file (exit 2 without).
    env = {**os.environ, **ceph_s3.env}
    refused = subprocess.run(
        [*SEGWAL, "restore", ceph_s3.url, str(tmp_path / "c"), "--to-lsn", "45"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert refused.returncode == 2 and "--kek-file" in refused.stderr
    (tmp_path / "kek").write_bytes(KEK)
    done = subprocess.run(
        [*SEGWAL, "restore", ceph_s3.url, str(tmp_path / "c"), "--to-lsn", "45",
         "--kek-file", str(tmp_path / "kek")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert records(tmp_path / "c", KEK) == records(log, KEK)[:45]
    segwal.rotate_keys(log, KEK, new_kek=KEK2)
    write(log, ceph_s3.url, KEK2, 61, 30, **opts)
    report = segwal.verify_archive(ceph_s3.url, archive_options=ceph_s3.options)
    assert report.ok, report.problems
    segwal.restore(ceph_s3.url, tmp_path / "r2", archive_options=ceph_s3.options)
    assert records(tmp_path / "r2", KEK2) == records(log, KEK2)
    assert os.listdir(tmp_path / "r2").count("KEYS") == 1


def test_push_of_an_encrypted_log_needs_no_key_and_uploads_its_keys(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with segwal.open(log, encryption_key=KEK, segment_bytes=4096) as wal:
        for lsn in range(1, 151):
            wal.append(payload(lsn, 100))
        wal.rotate()
    store = OrderedStore()
    status = segwal.push(log, store)  # beside a writer, with no key
    assert status.archived_lsn == 150
    (keyset,) = key_sets(store)
    assert store.objects[keyset].data == (log / "KEYS").read_bytes()
    assert store.created.index(keyset) < min(store.created.index(k) for k in segments(store))
    segwal.restore(store, tmp_path / "r")
    assert records(tmp_path / "r", KEK) == records(log, KEK)
