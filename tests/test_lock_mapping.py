"""LOCK published through a shared mapping (docs/FORMAT.md "LOCK mapping", issue 15).

- Under ``strace``: a durable single append is one ``pwrite`` (of the record) and one
  ``fdatasync``, and nothing else touches a file; a readonly ``read()`` makes no system
  call at all while nothing changed, and sees a change the writer publishes.
- The seam operation ``map_shared`` behaves the same on real files and in the in-memory
  model: stores seen by ``pread`` at once and the other way round, the mapping follows the
  inode, refuses a file shorter than itself, and its stores are pending (unsynced) writes
  that a crash image may or may not keep.
- The seqlock gives a reader in another process untorn copies while a writer publishes in
  a loop; compatibility with readers and writers that ``pread``/``pwrite`` 116 bytes; a
  writer killed between two stores; a file system without mappings; fork.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import segwal
from segwal.errors import StorageError
from segwal.format import lock
from segwal.format.naming import LOCK_NAME
from segwal.storage.fileio import OsFile, OsFileSystem
from segwal.storage.lockfile import LockHandle, LockWatch, take_lock
from segwal.testing import MemoryFileSystem

# -- strace: system calls per durable append and per readonly read ------------------------

CHILD = r"""
import os, sys
import segwal
from segwal.format import lock

directory = sys.argv[1]
def mark(text):
    os.write(2, text.encode() + b"\n")

wal = segwal.open(directory, sync="always", segment_bytes=1 << 24)
for _ in range(5):
    wal.append(b"w" * 100)
view = segwal.open(directory, readonly=True)
view.read(3)
view.read(4)
mark("BEGIN-APPENDS")
for _ in range(20):
    wal.append(b"x" * 100)
mark("END-APPENDS")
# The writer published without a pwrite: an older reader's pread sees the durable LSN.
with open(os.path.join(directory, "LOCK"), "rb") as f:
    published = lock.decode(f.read(lock.SIZE))
assert published is not None and published.durable_lsn == wal.durable_lsn == 25, published
assert view.read(25).payload == b"x" * 100  # the view saw the change and planned again
view.read(24)
mark("BEGIN-READS")
for i in range(50):
    view.read(24 + i % 2)
mark("END-READS")
wal.append(b"later")
mark("BEGIN-CHANGED")
assert view.read(26).payload == b"later"
mark("END-CHANGED")
wal.close()
view.close()
print("child ok")
"""

# Every call that reads, writes, syncs, opens or closes a file: the ones a publication or a
# look at LOCK could have used. Memory management (mmap, brk, madvise) and futexes are left
# out: Python's allocator and threads may make them at any moment.
FILE_CALLS = frozenset(
    {
        "read",
        "pread64",
        "readv",
        "preadv",
        "preadv2",
        "write",
        "pwrite64",
        "writev",
        "pwritev",
        "pwritev2",
        "fsync",
        "fdatasync",
        "sync_file_range",
        "msync",
        "open",
        "openat",
        "openat2",
        "close",
        "lseek",
        "fstat",
        "newfstatat",
        "statx",
        "stat",
        "lstat",
        "ftruncate",
        "fallocate",
        "flock",
        "fcntl",
    }
)
_LINE = re.compile(r"^\d+\s+(\w+)\((\d+)?")


def _strace() -> str:
    exe = shutil.which("strace")
    if exe is None:
        pytest.skip("strace is not installed (Debian package: strace)")
    probe = subprocess.run([exe, "-f", "-o", os.devnull, "/bin/true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"strace cannot trace here: {probe.stderr.decode().strip()}")
    return exe


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[str, int | None]]]:
    """The child's file system calls between each pair of markers."""
    exe = _strace()
    root = tmp_path_factory.mktemp("traced")
    script = root / "child.py"
    script.write_text(CHILD)
    trace = root / "trace.txt"
    cmd = [exe, "-f", "-qq", "-o", str(trace), sys.executable, "-B", str(script), str(root / "w")]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0 and "child ok" in run.stdout, run.stderr[-3000:]
    windows: dict[str, list[tuple[str, int | None]]] = {}
    current: list[tuple[str, int | None]] | None = None
    for line in trace.read_text().splitlines():
        marker = re.search(r'write\(2, "(BEGIN|END)-(\w+)\\n"', line)
        if marker is not None:
            current = (
                windows.setdefault(marker.group(2), []) if marker.group(1) == "BEGIN" else None
            )
            continue
        match = _LINE.match(line)
        if current is not None and match is not None and match.group(1) in FILE_CALLS:
            fd = match.group(2)
            current.append((match.group(1), None if fd is None else int(fd)))
    assert set(windows) == {"APPENDS", "READS", "CHANGED"}, windows
    return windows


def test_a_durable_append_is_one_pwrite_and_one_fdatasync(traced: dict[str, Any]) -> None:
    calls = traced["APPENDS"]
    assert [name for name, _fd in calls] == ["pwrite64", "fdatasync"] * 20, calls
    # Both on the segment: LOCK is not written (the child checked that it says 25).
    assert len({fd for _name, fd in calls}) == 1


def test_a_readonly_read_makes_no_system_call_while_nothing_changed(
    traced: dict[str, Any],
) -> None:
    assert traced["READS"] == []
    # A change is seen (the child asserted the new record) by planning again: that costs
    # system calls, which shows the windows are not blind.
    assert traced["CHANGED"]


# -- the seam operation on real files and in the model ------------------------------------


@pytest.fixture(params=["os", "memory"])
def fs_dir(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Any, str]:
    if request.param == "os":
        return OsFileSystem(), str(tmp_path)
    fs = MemoryFileSystem()
    fs.make_dir("/d")
    return fs, "/d"


def _file(fs: Any, directory: str, name: str, content: bytes) -> str:
    path = f"{directory}/{name}"
    handle = fs.create(path)
    handle.pwrite(content, 0)
    handle.close()
    return path


def test_a_store_is_seen_by_pread_at_once_and_a_pwrite_by_a_load(fs_dir: tuple[Any, str]) -> None:
    fs, directory = fs_dir
    path = _file(fs, directory, "f", bytes(64))
    writer = fs.open_write(path)
    mapping = writer.map_shared(64, writable=True)
    reader = fs.open_read(path)
    view = reader.map_shared(64, writable=False)
    mapping.store(b"abc", 5)
    mapping.store_sequenced(b"published", 24, sequence=0x0102030405060708, at=16)
    assert reader.pread(8, 16) == (0x0102030405060708).to_bytes(8, "little")
    assert reader.pread(3, 5) == b"abc"
    assert reader.pread(9, 24) == b"published"
    assert view.load_word(16) == 0x0102030405060708
    writer.pwrite(b"xyz", 40)
    assert view.load(4, 39) == b"\0xyz"
    assert view.load(64, 0) == reader.pread(64, 0)
    for m in (mapping, view):
        m.close()
        m.close()  # twice is harmless
    with pytest.raises(StorageError):
        view.load_word(0)
    with pytest.raises(StorageError):
        mapping.store(b"x", 0)
    writer.close()
    reader.close()


def test_the_mapping_refuses_a_short_file_and_a_readonly_handle(fs_dir: tuple[Any, str]) -> None:
    fs, directory = fs_dir
    path = _file(fs, directory, "f", bytes(60))
    handle = fs.open_write(path)
    with pytest.raises(StorageError):
        handle.map_shared(64, writable=True)  # past the end: SIGBUS if it were allowed
    with pytest.raises(StorageError):
        handle.map_shared(12, writable=True)  # not whole words
    reader = fs.open_read(path)
    with pytest.raises(StorageError):
        reader.map_shared(56, writable=True)
    handle.close()
    reader.close()


def test_the_mapping_follows_the_inode_and_outlives_the_handle(fs_dir: tuple[Any, str]) -> None:
    fs, directory = fs_dir
    path = _file(fs, directory, "f", b"old!" * 4)
    handle = fs.open_read(path)
    view = handle.map_shared(16, writable=False)
    handle.close()
    assert view.load(4, 0) == b"old!"
    _file(fs, directory, "g", b"new!" * 4)
    fs.rename(f"{directory}/g", path)
    assert view.load(4, 0) == b"old!"  # the replaced file, as an open descriptor would
    view.close()


def test_a_store_is_recorded_and_pending_like_a_write() -> None:
    fs = MemoryFileSystem()
    fs.make_dir("/d")
    handle = fs.create("/d/f")
    handle.pwrite(bytes(16), 0)
    handle.sync("test")
    fs.sync_dir("/d", "test")
    mapping = handle.map_shared(16, writable=True)
    mapping.store(b"published", 0)
    op = fs.ops[-1]
    assert (op.kind, op.path, op.offset, op.data) == ("map_write", "/d/f", 0, b"published")
    kept = {image.tree()["/d/f"] for image in fs.crash_states(seed=1)}
    assert kept == {bytes(16), b"published" + bytes(7)}  # a crash keeps it or not
    handle.sync("test")
    assert {image.tree()["/d/f"] for image in fs.crash_states(seed=1)} == {b"published" + bytes(7)}
    handle.truncate(8)  # shortened under the mapping: a real process would die of SIGBUS
    with pytest.raises(StorageError):
        mapping.load(16, 0)


# -- the writer's publications and the readonly watch -------------------------------------


def test_the_writer_maps_lock_and_continues_the_sequence(fs_dir: tuple[Any, str]) -> None:
    fs, directory = fs_dir
    handle = take_lock(fs, directory)
    assert isinstance(handle, LockHandle) and handle.mapped
    raw = handle.pread(lock.MAPPED_SIZE, 0)
    first = lock.sequence_of(raw)
    assert len(raw) == lock.MAPPED_SIZE and first and not first & 1
    ops = fs.op_count if isinstance(fs, MemoryFileSystem) else 0
    for lsn in (1, 2, 3):
        handle.publish(lock.encode(7, lsn, 0, generation=5))
    if isinstance(fs, MemoryFileSystem):
        # One recorded operation per publication, as the pwrite it replaces was: the crash
        # enumeration crashes at as many points as before, with as many pending units.
        assert [op.kind for op in fs.ops[ops:]] == ["map_write"] * 3
        assert {(op.offset, op.length) for op in fs.ops[ops:]} == {(0, lock.MAPPED_SIZE)}
    raw = handle.pread(lock.MAPPED_SIZE, 0)
    assert lock.sequence_of(raw) == first + 6  # two steps per publication
    found = lock.decode(raw)
    assert found is not None and (found.pid, found.durable_lsn, found.generation) == (7, 3, 5)
    handle.close()
    handle.close()  # twice is harmless
    again = take_lock(fs, directory)
    assert lock.sequence_of(again.pread(lock.MAPPED_SIZE, 0)) == first + 8
    again.close()


def test_a_watch_reads_through_the_mapping_and_sees_an_older_writers_pwrite(
    tmp_path: Path,
) -> None:
    fs = OsFileSystem()
    handle = take_lock(fs, str(tmp_path))
    watch = LockWatch(fs, str(tmp_path))
    seen = watch.read()
    assert watch.mapped and seen == handle.pread(lock.MAPPED_SIZE, 0)
    handle.publish(lock.encode(1, 10, 0, generation=3))
    after = watch.read()
    assert after is not None and after != seen
    found = lock.decode(after)
    assert found is not None and found.durable_lsn == 10
    # A writer before 0.4 rewrites 116 bytes with pwrite and leaves the sequence alone.
    with open(tmp_path / LOCK_NAME, "r+b") as f:
        os.pwrite(f.fileno(), lock.encode(1, 11, 0, generation=3), 0)
    later = watch.read()
    assert (
        later is not None and later != after and lock.sequence_of(later) == lock.sequence_of(after)
    )
    watch.close()
    handle.close()


def test_same_answers_from_the_mapping_until_something_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = OsFileSystem()
    handle = take_lock(fs, str(tmp_path))
    watch = LockWatch(fs, str(tmp_path))
    key = watch.read()
    assert key is not None and watch.same(key) and watch.same(key)
    handle.publish(lock.encode(1, 1, 0, generation=2))
    assert not watch.same(key)
    key = watch.read()
    assert key is not None and watch.same(key)
    with open(tmp_path / LOCK_NAME, "r+b") as f:  # an older writer: bytes, not the sequence
        os.pwrite(f.fileno(), lock.encode(1, 2, 0, generation=2), 0)
    assert not watch.same(key)
    key = watch.read()
    assert key is not None and watch.same(key)
    monkeypatch.setattr(LockWatch, "REOPEN_SECONDS", 0.0)
    assert not watch.same(key)  # time to open the file again: read() does it
    watch.close()
    handle.close()


def test_a_lock_left_short_by_an_older_writer_is_read_with_pread_until_extended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / LOCK_NAME).write_bytes(lock.encode(0, 4, 0, generation=9))  # 116 bytes
    fs = OsFileSystem()
    watch = LockWatch(fs, str(tmp_path))
    raw = watch.read()
    assert not watch.mapped and raw is not None and lock.decode(raw) is not None
    handle = take_lock(fs, str(tmp_path))  # extends the file and maps it
    assert (tmp_path / LOCK_NAME).stat().st_size == lock.MAPPED_SIZE
    found = lock.decode(handle.pread(lock.SIZE, 0))
    assert found is not None and found.generation == 10
    monkeypatch.setattr(LockWatch, "REOPEN_SECONDS", 0.0)
    assert watch.read() == handle.pread(lock.MAPPED_SIZE, 0) and watch.mapped
    watch.close()
    handle.close()


def test_a_writer_killed_between_stores_leaves_readers_working(tmp_path: Path) -> None:
    directory = str(tmp_path / "w")
    with segwal.open(directory, sync="always") as wal:
        wal.append_batch([b"a", b"b", b"c"])
    path = tmp_path / "w" / LOCK_NAME
    raw = bytearray(path.read_bytes())
    odd = lock.sequence_of(bytes(raw)) + 1
    raw[lock.SEQUENCE_OFFSET :] = lock.SEQUENCE.pack(odd)  # the first of three stores only
    path.write_bytes(bytes(raw))
    watch = LockWatch(OsFileSystem(), directory)
    assert watch.read() == bytes(raw)  # the copy as it is, not None for ever
    watch.close()
    with segwal.open(directory, readonly=True) as view:
        assert [view.read(n).payload for n in (1, 2, 3)] == [b"a", b"b", b"c"]
    with segwal.open(directory, sync="always") as wal:
        sequence = lock.sequence_of(path.read_bytes())
        assert sequence > odd and not sequence & 1
        wal.append(b"d")


PUBLISHER = r"""
import sys
from segwal.format import lock
from segwal.storage.fileio import OsFileSystem
from segwal.storage.lockfile import take_lock

handle = take_lock(OsFileSystem(), sys.argv[1])
assert handle.mapped
print("ready", flush=True)
k = 1
while True:  # every publication says durable == rewinds == generation == k
    handle.publish(lock.encode(7, k, k, (k, k, k, k, k, k), generation=k))
    k += 1
"""


def test_a_reader_in_another_process_never_gets_a_torn_copy(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        watch = LockWatch(OsFileSystem(), str(tmp_path))
        values = set()
        reads = 0
        deadline = time.monotonic() + 60
        # Until the publisher has moved many times during the reads (two processes on a
        # busy machine may take turns a few milliseconds at a time).
        while (reads < 20000 or len(values) < 50) and time.monotonic() < deadline:
            reads += 1
            raw = watch.read()
            assert raw is not None
            found = lock.decode(raw)
            assert found is not None, raw  # both complements agree: not torn
            assert found.rewinds == found.durable_lsn == found.generation or (
                found.durable_lsn == 0 and found.generation is not None
            ), found
            assert found.counters is None or found.counters == (found.durable_lsn,) * 6
            assert not lock.sequence_of(raw) & 1
            values.add(found.durable_lsn)
        watch.close()
        assert len(values) >= 50, "the publisher did not run alongside the reader"
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


class _PlainFileSystem(OsFileSystem):
    """A caller's FileSystem from before 0.4: handles without ``map_shared``."""

    class Plain:
        def __init__(self, inner: OsFile) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> Any:
            if name == "map_shared":
                raise AttributeError(name)
            return getattr(self._inner, name)

    def open_read(self, path: str) -> Any:
        return self.Plain(super().open_read(path))

    def lock(self, path: str, *, exclusive: bool) -> Any:
        handle = super().lock(path, exclusive=exclusive)
        return None if handle is None else self.Plain(handle)


def test_a_file_system_without_mappings_publishes_with_pwrite(tmp_path: Path) -> None:
    fs = _PlainFileSystem()
    directory = str(tmp_path / "w")
    with segwal.open(directory, sync="always", filesystem=fs) as wal:
        wal.append(b"one")
        with segwal.open(directory, readonly=True, filesystem=fs) as view:
            assert view.read(1).payload == b"one"
            wal.append(b"two")
            found = lock.decode((tmp_path / "w" / LOCK_NAME).read_bytes())
            assert found is not None and found.durable_lsn == 2
            assert view.read(2).payload == b"two"


def test_a_forked_child_never_publishes(tmp_path: Path) -> None:
    directory = str(tmp_path / "w")
    path = tmp_path / "w" / LOCK_NAME
    with segwal.open(directory, sync="always") as wal:
        wal.append(b"before")
        pid = os.fork()
        if pid == 0:  # the child: its log is refused; closing it must not touch LOCK
            code = 0
            try:
                wal.close()
            except BaseException:
                code = 0  # refusing is fine; publishing is not, and the parent checks that
            os._exit(code)
        os.waitpid(pid, 0)
        found = lock.decode(path.read_bytes())
        assert found is not None and found.pid == os.getpid() and found.durable_lsn == 1
        wal.append(b"after")
        found = lock.decode(path.read_bytes())
        assert found is not None and found.durable_lsn == 2
    found = lock.decode(path.read_bytes())
    assert found is not None and found.pid == 0  # closed cleanly by the parent
