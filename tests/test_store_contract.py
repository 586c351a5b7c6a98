"""One contract for every object store the archive runs on (issue 12).

Each test runs on every store in ``STORES``: a local directory (``file://``) and a real
Ceph RGW over plain HTTP and over TLS (``ceph_s3`` fixtures, started once per session).
The in-memory fault-injecting store joins by adding its name to ``STORES`` and a branch to
``store`` below. Errors that only a network store can produce (wrong credentials, a
missing bucket, a closed port) are at the end, per store kind.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ceph_fixture import CephS3
from segwal.archive.local import STALE_SECONDS, LocalStore
from segwal.archive.memory import MemoryStore
from segwal.archive.store import ObjectInfo, ObjectStore
from segwal.archive.urls import open_store
from segwal.errors import ArchiveAccessError, ArchiveError, ArchiveNotFoundError, ConfigError

STORES = ["memory", "local", "ceph-plain", "ceph-tls"]


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    """A new, empty store of each kind."""
    made: ObjectStore
    if request.param == "memory":
        made = MemoryStore()
    elif request.param == "local":
        made = open_store((tmp_path / "archive").as_uri())
    elif request.param.startswith("ceph-"):
        ceph: CephS3 = request.getfixturevalue(request.param.replace("-", "_s3_"))
        made = open_store(ceph.url, **ceph.options)
    else:
        raise AssertionError(f"no store named {request.param}")
    try:
        yield made
    finally:
        made.close()


def keys(found: Iterator[ObjectInfo]) -> list[str]:
    return [info.key for info in found]


# -- the protocol ------------------------------------------------------------------------


def test_put_if_absent_creates_once_and_keeps_the_first(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)
    assert store.put_if_absent("g/1/seg/a", b"first", {"last-lsn": "7"}) is True
    assert store.put_if_absent("g/1/seg/a", b"second", {"last-lsn": "9"}) is False
    assert store.get("g/1/seg/a") == b"first"
    info = store.head("g/1/seg/a")
    assert info == ObjectInfo("g/1/seg/a", 5, {"last-lsn": "7"})


def test_put_replaces_data_and_metadata(store: ObjectStore) -> None:
    store.put("marker", b"one", {"a": "1", "b": "2"})
    store.put("marker", b"three", {"c": "3"})
    assert store.get("marker") == b"three"
    assert store.head("marker") == ObjectInfo("marker", 5, {"c": "3"})


def test_metadata_round_trips(store: ObjectStore) -> None:
    metadata = {"first-lsn": "1", "last-lsn": "18446744073709551615", "digest": "ab" * 32}
    store.put_if_absent("seg", bytes(range(256)), metadata)
    info = store.head("seg")
    assert info is not None and dict(info.metadata) == metadata and info.size == 256
    store.put_if_absent("bare", b"x")
    bare = store.head("bare")
    assert bare is not None and dict(bare.metadata) == {}


def test_ranged_gets_slice_like_python(store: ObjectStore) -> None:
    data = bytes(range(200)) * 3
    store.put("obj", data)
    assert store.get("obj") == data
    for start, end in [(0, 1), (1, 3), (0, 600), (472, 600), (599, None), (100, None), (5, 5)]:
        assert store.get("obj", start, end) == data[start:end], (start, end)
    assert store.get("obj", 550, 10_000) == data[550:]
    assert store.get("obj", 600) == b""
    assert store.get("obj", 700, 800) == b""
    store.put("empty", b"")
    assert store.get("empty") == b""
    assert store.head("empty") == ObjectInfo("empty", 0, {})


def test_missing_objects(store: ObjectStore) -> None:
    assert store.head("nothing/here") is None
    with pytest.raises(ArchiveNotFoundError) as caught:
        store.get("nothing/here")
    assert caught.value.key == "nothing/here"
    with pytest.raises(ArchiveNotFoundError):
        store.get("nothing/here", 0, 10)
    store.delete("nothing/here")  # not an error
    assert keys(store.list("")) == []


def test_delete_then_create_again(store: ObjectStore) -> None:
    store.put_if_absent("k", b"1")
    store.delete("k")
    assert store.head("k") is None
    assert keys(store.list("")) == []
    assert store.put_if_absent("k", b"2") is True
    assert store.get("k") == b"2"


def test_list_is_in_key_order_with_prefix_and_start_after(store: ObjectStore) -> None:
    # '/' (0x2f) sorts after '-' (0x2d) and before '0': byte order, not path order.
    names = ["a", "a-b", "a/b", "a/c/d", "a0", "b/x", "ab", "a/b/c"]
    for name in names:
        store.put(name, name.encode())
    assert keys(store.list("")) == sorted(names)
    assert keys(store.list("a/")) == ["a/b", "a/b/c", "a/c/d"]
    assert keys(store.list("a/", start_after="a/b")) == ["a/b/c", "a/c/d"]
    assert keys(store.list("", start_after="a0")) == ["ab", "b/x"]
    assert keys(store.list("", start_after="zzz")) == []
    assert keys(store.list("nope/")) == []
    sizes = {info.key: info.size for info in store.list("")}
    assert sizes == {name: len(name) for name in names}


def test_list_pages_past_a_thousand_keys(store: ObjectStore) -> None:
    count = 1100
    names = [f"seg/{i:020d}.wal" for i in range(count)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda name: store.put_if_absent(name, name[-8:].encode()), names))
    store.put("seg0", b"outside the prefix")
    assert keys(store.list("seg/")) == names
    assert keys(store.list("seg/", start_after=names[999])) == names[1000:]
    assert keys(store.list("seg/", start_after=names[3])) == names[4:]


def test_racing_creators_exactly_one_wins(store: ObjectStore) -> None:
    contenders = 8
    barrier = threading.Barrier(contenders)
    results: dict[int, bool] = {}

    def create(i: int) -> None:
        barrier.wait()
        results[i] = store.put_if_absent("contested", b"writer %d" % i, {"writer": str(i)})

    threads = [threading.Thread(target=create, args=(i,)) for i in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for i, won in results.items() if won]
    assert len(results) == contenders and len(winners) == 1
    assert store.get("contested") == b"writer %d" % winners[0]
    info = store.head("contested")
    assert info is not None and info.metadata == {"writer": str(winners[0])}


def test_invalid_ranges_are_refused(store: ObjectStore) -> None:
    store.put("obj", b"abc")
    for start, end in [(-1, None), (2, 1)]:
        with pytest.raises(ArchiveError):
            store.get("obj", start, end)


# -- URLs and the local directory --------------------------------------------------------


def test_file_urls(tmp_path: Path) -> None:
    store = open_store((tmp_path / "a b").as_uri())
    assert isinstance(store, LocalStore) and store.root == str(tmp_path / "a b")
    assert open_store(f"file://localhost{tmp_path}").url == tmp_path.as_uri()
    for bad in ["file://otherhost/x", "file:relative", "ftp://x/y", "s3:///prefix", "file:///x?y"]:
        with pytest.raises(ConfigError):
            open_store(bad)


def test_a_local_store_can_refuse_to_create(tmp_path: Path) -> None:
    with pytest.raises(ArchiveAccessError):
        open_store((tmp_path / "missing").as_uri(), create=False)
    assert not (tmp_path / "missing").exists()
    open_store((tmp_path / "made").as_uri())
    assert open_store((tmp_path / "made").as_uri(), create=False).head("x") is None


def test_local_store_survives_reopen_and_leaves_no_staging(tmp_path: Path) -> None:
    url = (tmp_path / "archive").as_uri()
    first = open_store(url)
    first.put_if_absent("g/1/ARCHIVE", b"id", {"log-id": "42"})
    first.put("m", b"1")
    first.put("m", b"2")
    first.delete("m")
    assert list((tmp_path / "archive" / "tmp").iterdir()) == []
    again = open_store(url)
    assert again.head("g/1/ARCHIVE") == ObjectInfo("g/1/ARCHIVE", 2, {"log-id": "42"})
    assert again.put_if_absent("g/1/ARCHIVE", b"other") is False


def test_local_store_refuses_keys_it_cannot_hold(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for bad in ["", "/abs", "nul\0byte", "k" * 300]:
        with pytest.raises(ArchiveError):
            store.put(bad, b"x")


def test_local_store_sweeps_what_a_crash_left_behind(tmp_path: Path) -> None:
    LocalStore(tmp_path)
    stale, fresh = tmp_path / "tmp" / "stale", tmp_path / "tmp" / "fresh"
    for staging in (stale, fresh):
        staging.mkdir()
        (staging / "data").write_bytes(b"half an object")
    old = time.time() - 2 * STALE_SECONDS
    os.utime(stale, (old, old))
    store = LocalStore(tmp_path)
    assert not stale.exists() and fresh.exists()  # fresh may be another process's put
    assert list(store.list("")) == []
