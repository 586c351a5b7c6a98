"""Compression dictionaries in the archive (issue 11): ``dicts/<digest>.zdict`` is created
before the first segment that names it, a restore and a mirror install it before the
segments, ``verify_archive`` names a missing one, and archive retention never deletes one.
One test over the memory store, a ``file://`` store and a real Ceph RGW."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import segwal
from ceph_fixture import CephS3
from dictlib import record, trained
from segwal.archive.dictobjects import DICTS_PREFIX
from segwal.archive.memory import MemoryStore
from segwal.archive.objects import parse_segment_key
from segwal.format import dictionary as zdict
from segwal.format.layout import decode_header

FAST = {"archive_poll_interval": 0.02, "segment_bytes": 2048}


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


def _replay(path: Path) -> list[bytes]:
    with segwal.open(path, readonly=True) as wal:
        return [r.payload for r in wal.replay()]


def _write(path: Path, archive: Any, options: dict[str, Any], first: int, count: int) -> None:
    with segwal.open(
        path,
        archive=archive,
        compression="zstd",
        compression_dictionary=trained(0 if first == 0 else 1),
        **FAST,
        **options,
    ) as wal:
        wal.rotate()  # a segment of the new dictionary from here on
        for i in range(first, first + count):
            wal.append(record(i))
        wal.rotate()
        assert wal.wait_archived(wal.last_lsn, timeout=60), wal.archive_status()


@pytest.mark.parametrize("where", ["memory", "file", "ceph"])
def test_dictionaries_are_archived_restored_and_mirrored(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    options: dict[str, Any] = {}
    store: Any
    if where == "memory":
        store = archive = OrderedStore()
    elif where == "file":
        archive = f"file://{tmp_path / 'archive'}"
        store = None
    else:
        ceph: CephS3 = request.getfixturevalue("ceph_s3_plain")
        archive, store = ceph.url, ceph.store()
        options = {"archive_options": ceph.options}
    log = tmp_path / "log"
    _write(log, archive, options, 0, 60)
    _write(log, archive, options, 60, 40)  # a second dictionary
    wanted = _replay(log)
    assert wanted == [record(i) for i in range(100)]
    if isinstance(store, OrderedStore):
        made = store.created
        dicts = [k for k in made if k.startswith(DICTS_PREFIX)]
        assert len(dicts) == 2
        ids = {zdict.id_of(bytes.fromhex(d[len(DICTS_PREFIX) : -6])): d for d in dicts}
        named = 0
        for index, key in enumerate(made):
            if parse_segment_key(key) is None:
                continue
            dict_id = decode_header(store.objects[key].data[:128]).dict_id
            if dict_id:  # its dictionary was created before it
                assert made.index(ids[dict_id]) < index
                named += 1
        assert named > 4
        for key in dicts:
            local = log / key.removeprefix(DICTS_PREFIX)
            assert store.objects[key].data == local.read_bytes()
    archive_options = options.get("archive_options")
    assert segwal.verify_archive(archive, archive_options=archive_options).ok
    restored = tmp_path / "restored"
    segwal.restore(archive, restored, archive_options=archive_options)
    assert len(list(restored.glob("*.zdict"))) == 2
    assert _replay(restored) == wanted
    assert segwal.verify(restored).ok
    mirrored = tmp_path / "mirror"
    segwal.mirror(archive, mirrored, archive_options=archive_options)
    assert _replay(mirrored) == wanted
    # Archive retention deletes segments, never a dictionary (a restore may need it).
    segwal.prune_archive(archive, max_bytes=4 * 2048, delay=0, archive_options=archive_options)
    segwal.prune_archive(archive, max_bytes=4 * 2048, delay=0, archive_options=archive_options)
    listing = segwal.list_archive(archive, archive_options=archive_options)
    assert listing is not None
    again = tmp_path / "again"
    segwal.restore(archive, again, archive_options=archive_options)
    assert _replay(again) == wanted[-len(_replay(again)) :]


def test_a_missing_dictionary_object_is_named_and_stops_a_restore(tmp_path: Path) -> None:
    store = MemoryStore()
    _write(tmp_path / "log", store, {}, 0, 30)
    (key,) = [k for k in store.objects if k.startswith(DICTS_PREFIX)]
    del store.objects[key]
    report = segwal.verify_archive(store)
    assert not report.ok and any("not archived" in p.reason for p in report.problems)
    with pytest.raises(segwal.ArchiveNotFoundError, match="dictionary"):
        segwal.restore(store, tmp_path / "r")
    assert not (tmp_path / "r").exists()
    with pytest.raises(segwal.ArchiveNotFoundError, match="dictionary"):
        segwal.mirror(store, tmp_path / "m")
    assert not list((tmp_path / "m").glob("*.wal"))  # no segment without its dictionary


def _colliding_contents() -> tuple[bytes, bytes]:
    """Two valid dictionary contents whose 32-bit ids collide (a birthday search over
    ~2^16 BLAKE3 digests: well under a second)."""
    seen: dict[int, bytes] = {}
    counter = 0
    while True:
        content = zdict.ZSTD_DICT_MAGIC + counter.to_bytes(8, "little")
        dict_id = zdict.id_of(zdict.digest_of(content))
        other = seen.setdefault(dict_id, content)
        if other != content and dict_id:
            return other, content
        counter += 1


def test_two_archived_dictionaries_sharing_an_id_are_named(tmp_path: Path) -> None:
    store = MemoryStore()
    _write(tmp_path / "log", store, {}, 0, 30)
    assert segwal.verify_archive(store).ok
    first, second = (zdict.make(c) for c in _colliding_contents())
    assert first.dict_id == second.dict_id and first.digest != second.digest
    for dictionary in (first, second):
        store.put(DICTS_PREFIX + dictionary.name, zdict.encode(dictionary))
    report = segwal.verify_archive(store)
    shared = [p for p in report.problems if "shares dictionary id" in p.reason]
    assert not report.ok and len(shared) == 1
    assert f"{first.dict_id:#010x}" in shared[0].reason
    assert {shared[0].key} < {DICTS_PREFIX + first.name, DICTS_PREFIX + second.name}
