"""Tests of segwal.testing: the in-memory file system mirrors the real one and crashes
under the fault model of RELIABILITY.md."""

from __future__ import annotations

import errno
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from segwal.errors import StorageError
from segwal.storage.fileio import Entry, FileHandle, FileSystem, OsFileSystem
from segwal.testing import (
    FAULT_KINDS,
    MemoryFileSystem,
    candidate_subsets,
)

# -- parity: the same behaviour on the real and the memory file system --------------------


@dataclass
class Env:
    fs: FileSystem
    root: str

    def p(self, *names: str) -> str:
        return "/".join([self.root, *names])


@pytest.fixture(params=["os", "memory"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    if request.param == "os":
        yield Env(OsFileSystem(), str(tmp_path))
    else:
        fs = MemoryFileSystem()
        fs.make_dir("/data/t")
        yield Env(fs, "/data/t")


def raises(code: int, fn: Callable[[], object], op: str | None = None) -> StorageError:
    with pytest.raises(StorageError) as info:
        fn()
    assert info.value.errno == code, info.value
    if op is not None:
        assert info.value.op == op
    return info.value


def write_file(env: Env, name: str, data: bytes) -> None:
    h = env.fs.create(env.p(name))
    try:
        h.pwrite(data, 0)
    finally:
        h.close()


def read_file(env: Env, name: str) -> bytes:
    h = env.fs.open_read(env.p(name))
    try:
        return h.pread(h.size() + 10, 0)
    finally:
        h.close()


def test_make_dir_and_list(env: Env) -> None:
    fs = env.fs
    assert fs.make_dir(env.p("a", "b", "c")) is True
    assert fs.make_dir(env.p("a", "b", "c")) is False
    assert fs.make_dir(env.p("a")) is False
    write_file(env, "a/f", b"x")
    assert sorted(fs.list_dir(env.p("a")), key=lambda e: e.name) == [
        Entry("b", False),
        Entry("f", True),
    ]
    assert fs.list_dir(env.p("a", "b", "c")) == []
    assert fs.make_dir(env.p("a", "f")) is False  # an existing file: like mkdir's EEXIST
    raises(errno.ENOTDIR, lambda: fs.make_dir(env.p("a", "f", "x")), "mkdir")
    raises(errno.ENOENT, lambda: fs.list_dir(env.p("missing")), "list")
    raises(errno.ENOTDIR, lambda: fs.list_dir(env.p("a", "f")), "list")
    raises(errno.ENOENT, lambda: fs.list_dir(""))


def test_create_is_exclusive(env: Env) -> None:
    fs = env.fs
    h = fs.create(env.p("f"))
    assert h.path == env.p("f")
    assert h.size() == 0
    h.close()
    err = raises(errno.EEXIST, lambda: fs.create(env.p("f")), "create")
    assert err.path == env.p("f")
    fs.make_dir(env.p("d"))
    raises(errno.EEXIST, lambda: fs.create(env.p("d")), "create")
    raises(errno.ENOENT, lambda: fs.create(env.p("missing", "f")), "create")
    raises(errno.ENOTDIR, lambda: fs.create(env.p("f", "x")), "create")


def test_open_errors(env: Env) -> None:
    fs = env.fs
    raises(errno.ENOENT, lambda: fs.open_read(env.p("missing")), "open")
    raises(errno.ENOENT, lambda: fs.open_write(env.p("missing")), "open")
    raises(errno.ENOENT, lambda: fs.open_read(""), "open")
    fs.make_dir(env.p("d"))
    raises(errno.EISDIR, lambda: fs.open_write(env.p("d")), "open")
    h = fs.open_read(env.p("d"))
    try:
        raises(errno.EISDIR, lambda: h.pread(1, 0), "read")
    finally:
        h.close()
    write_file(env, "f", b"abc")
    raises(errno.ENOTDIR, lambda: fs.open_read(env.p("f", "x")), "open")
    raises(errno.ENOTDIR, lambda: fs.open_read(env.p("f") + "/"), "open")


def test_read_write_truncate(env: Env) -> None:
    h = env.fs.create(env.p("f"))
    h.pwrite(b"hello", 0)
    h.pwrite(bytearray(b"XY"), 1)
    h.pwrite(memoryview(b"!"), 8)  # past the end: a hole of zeros
    assert h.size() == 9
    assert h.pread(100, 0) == b"hXYlo\0\0\0!"
    assert h.pread(3, 7) == b"\0!"
    assert h.pread(5, 100) == b""
    assert h.pread(0, 0) == b""
    h.truncate(3)
    assert h.pread(10, 0) == b"hXY"
    h.truncate(6)
    assert h.pread(10, 0) == b"hXY\0\0\0"
    h.pwrite(b"", 100)  # nothing to write: no effect
    assert h.size() == 6
    raises(errno.EINVAL, lambda: h.pwrite(b"x", -1), "write")
    raises(errno.EINVAL, lambda: h.pread(1, -1), "read")
    raises(errno.EINVAL, lambda: h.truncate(-1), "truncate")
    h.sync("test")
    h.close()
    assert read_file(env, "f") == b"hXY\0\0\0"


def test_read_only_and_closed_handles(env: Env) -> None:
    write_file(env, "f", b"abc")
    ro = env.fs.open_read(env.p("f"))
    raises(errno.EBADF, lambda: ro.pwrite(b"x", 0), "write")
    raises(errno.EBADF, lambda: ro.pwrite(b"", 0), "write")
    raises(errno.EINVAL, lambda: ro.truncate(0), "truncate")
    ro.sync("ro")  # fdatasync works on a read-only descriptor
    ro.close()
    h = env.fs.open_write(env.p("f"))
    h.close()
    h.close()  # closing twice is harmless
    for fn, op in [
        (lambda: h.pwrite(b"x", 0), "write"),
        (lambda: h.pwrite(b"", 0), "write"),
        (lambda: h.pread(1, 0), "read"),
        (h.size, "stat"),
        (lambda: h.truncate(0), "truncate"),
    ]:
        raises(errno.EBADF, fn, op)
    if isinstance(env.fs, MemoryFileSystem):
        # OsFile.sync on a closed handle raises ValueError (os.fdatasync(-1)), not EBADF.
        raises(errno.EBADF, lambda: h.sync("closed"), "fdatasync")


def test_rename(env: Env) -> None:
    fs = env.fs
    write_file(env, "a", b"new")
    write_file(env, "b", b"old")
    fs.rename(env.p("a"), env.p("b"))
    assert read_file(env, "b") == b"new"
    raises(errno.ENOENT, lambda: fs.open_read(env.p("a")))
    fs.rename(env.p("b"), env.p("b"))  # same file: nothing happens
    assert read_file(env, "b") == b"new"
    err = raises(errno.ENOENT, lambda: fs.rename(env.p("missing"), env.p("z")), "rename")
    assert err.path == env.p("missing")
    err = raises(errno.ENOENT, lambda: fs.rename(env.p("b"), env.p("nodir", "z")), "rename")
    assert err.path == env.p("b")
    raises(errno.ENOTDIR, lambda: fs.rename(env.p("b"), env.p("b", "z")), "rename")
    fs.make_dir(env.p("d", "sub"))
    fs.make_dir(env.p("e"))
    write_file(env, "d/sub/x", b"x")
    raises(errno.EISDIR, lambda: fs.rename(env.p("b"), env.p("d")), "rename")
    raises(errno.ENOTDIR, lambda: fs.rename(env.p("d"), env.p("b")), "rename")
    raises(errno.ENOTEMPTY, lambda: fs.rename(env.p("e"), env.p("d")), "rename")
    raises(errno.EINVAL, lambda: fs.rename(env.p("d"), env.p("d", "sub", "in")), "rename")
    fs.rename(env.p("d", "sub"), env.p("e"))  # a directory over an empty one
    assert fs.list_dir(env.p("e")) == [Entry("x", True)]
    fs.rename(env.p("e"), env.p("d", "moved"))
    assert read_file(env, "d/moved/x") == b"x"


def test_unlink(env: Env) -> None:
    fs = env.fs
    write_file(env, "f", b"data")
    h = fs.open_read(env.p("f"))
    fs.unlink(env.p("f"))
    assert h.pread(10, 0) == b"data"  # an open file outlives its name
    h.close()
    assert fs.list_dir(env.root) == []
    raises(errno.ENOENT, lambda: fs.unlink(env.p("f")), "unlink")
    fs.make_dir(env.p("d"))
    raises(errno.EISDIR, lambda: fs.unlink(env.p("d")), "unlink")
    write_file(env, "g", b"")
    raises(errno.ENOTDIR, lambda: fs.unlink(env.p("g", "x")), "unlink")


def test_sync_dir(env: Env) -> None:
    env.fs.sync_dir(env.root, "test")
    raises(errno.ENOENT, lambda: env.fs.sync_dir(env.p("missing"), "test"), "fsync directory")
    write_file(env, "f", b"")
    raises(errno.ENOTDIR, lambda: env.fs.sync_dir(env.p("f"), "test"), "fsync directory")


def test_locks(env: Env) -> None:
    fs = env.fs
    path = env.p("LOCK")
    first = fs.lock(path, exclusive=True)
    assert first is not None
    assert Entry("LOCK", True) in fs.list_dir(env.root)  # created if missing
    assert fs.lock(path, exclusive=True) is None
    assert fs.lock(path, exclusive=False) is None
    first.pwrite(b"123", 0)  # the holder can write, like a pid file
    first.close()
    shared = [fs.lock(path, exclusive=False) for _ in range(2)]
    assert all(h is not None for h in shared)
    assert fs.lock(path, exclusive=True) is None
    for h in shared:
        assert h is not None
        h.close()
    again = fs.lock(path, exclusive=True)
    assert again is not None
    assert again.pread(10, 0) == b"123"
    again.close()
    fs.make_dir(env.p("d"))
    raises(errno.EISDIR, lambda: fs.lock(env.p("d"), exclusive=True), "open")
    raises(errno.ENOENT, lambda: fs.lock(env.p("no", "LOCK"), exclusive=True), "open")


def test_handles_satisfy_the_protocols() -> None:
    fs: FileSystem = MemoryFileSystem()
    fs.make_dir("d")
    h: FileHandle = fs.create("d/f")  # relative paths are relative to /
    h.close()
    assert fs.list_dir("/d") == [Entry("f", True)]
    assert fs.list_dir("/") == [Entry("d", False)]
    assert fs.list_dir("/d/../d/./") == [Entry("f", True)]


# -- durability -----------------------------------------------------------------------


def synced_file(fs: MemoryFileSystem, path: str, data: bytes) -> FileHandle:
    """A file whose name and content are durable; returns its open handle."""
    fs.make_dir(path.rsplit("/", 1)[0] or "/")
    h = fs.create(path)
    if data:
        h.pwrite(data, 0)
    h.sync("test")
    fs.sync_dir(path.rsplit("/", 1)[0] or "/", "test")
    return h


def contents(states: list[MemoryFileSystem], path: str) -> list[bytes | None]:
    return [s.tree().get(path) for s in states]


def test_nothing_pending_gives_one_state() -> None:
    fs = MemoryFileSystem()
    synced_file(fs, "/w/a", b"abc").close()
    assert fs.pending_units() == 0
    states = fs.crash_states()
    assert len(states) == 1
    assert states[0].tree() == {"/w": None, "/w/a": b"abc"}
    assert states[0].fingerprint() == fs.fingerprint() == fs.snapshot().fingerprint()


def test_unsynced_writes_can_vanish() -> None:
    fs = MemoryFileSystem()
    h = synced_file(fs, "/w/a", b"")
    h.pwrite(b"x" * 100, 0)
    assert fs.snapshot().tree()["/w/a"] == b""
    seen = set(contents(fs.crash_states(), "/w/a"))
    assert {b"", b"x" * 100, bytes(100)} <= seen
    assert len(seen) == 4  # also garbage of the same size
    h.sync("s")
    assert contents(fs.crash_states(), "/w/a") == [b"x" * 100]


def test_synced_data_survives_every_crash() -> None:
    fs = MemoryFileSystem()
    h = synced_file(fs, "/w/a", b"A" * 1500)
    h.pwrite(b"B" * 1500, 1500)
    h.sync("s")
    h.pwrite(b"C" * 700, 3000)  # pending: may or may not survive, in pieces
    h.pwrite(b"D" * 10, 100)  # pending overwrite inside the durable part
    states = fs.crash_states()
    assert len(states) > 10
    for state in states:
        data = state.tree()["/w/a"]
        assert data is not None
        assert data[:100] == b"A" * 100 and data[110:1500] == b"A" * 1390
        assert data[100:110] in (b"A" * 10, b"D" * 10)  # powersafe overwrite
        assert data[1500:3000] == b"B" * 1500
        assert len(data) in (3000, 3072, 3584, 3700)


def test_pieces_are_512_byte_sectors_and_persist_independently() -> None:
    fs = MemoryFileSystem()
    h = synced_file(fs, "/w/a", bytes(2048))
    h.pwrite(b"\xff" * 1024, 256)  # sectors: [256,512) [512,1024) [1024,1280)
    assert fs.pending_units() == 3
    states = fs.crash_states()
    assert len(states) == 8
    for state in states:
        data = state.tree()["/w/a"]
        assert data is not None and len(data) == 2048
        for start, end in [(256, 512), (512, 1024), (1024, 1280)]:
            assert data[start:end] in (bytes(end - start), b"\xff" * (end - start))


def test_zeros_or_garbage_past_the_durable_end() -> None:
    fs = MemoryFileSystem()
    h = synced_file(fs, "/w/a", b"H" * 10)
    h.pwrite(b"R" * 502, 10)  # the rest of sector 0
    h.pwrite(b"S" * 512, 512)  # sector 1
    assert all(s.crash_info.endswith("fill=garbage") for s in fs.crash_states(fills=["garbage"]))
    by_tail: dict[bytes, int] = {}
    for state in fs.crash_states():
        data = state.tree()["/w/a"]
        assert data is not None and data[:10] == b"H" * 10
        by_tail[data[512:]] = len(data)
    assert b"S" * 512 in by_tail  # persisted
    assert bytes(512) in by_tail  # the size persisted, the data did not: zeros
    assert b"" in by_tail  # neither
    garbage = [t for t in by_tail if t and t not in (b"S" * 512, bytes(512))]
    assert garbage and all(len(t) == 512 for t in garbage)
    # A later sector persisted, an earlier one did not: the hole reads zeros or garbage.
    holes = {d[10:512] for d in contents(fs.crash_states(), "/w/a") if d and d[512:] == b"S" * 512}
    assert bytes(502) in holes and b"R" * 502 in holes and len(holes) == 3


def test_unsynced_names_can_vanish() -> None:
    fs = MemoryFileSystem()
    fs.make_dir("/w")
    h = fs.create("/w/a")
    h.pwrite(b"data", 0)
    h.sync("s")  # data durable, name not
    assert fs.snapshot().tree() == {"/w": None}
    assert {s.tree().get("/w/a") for s in fs.crash_states()} == {None, b"data"}
    fs.sync_dir("/w", "d")
    assert {s.tree().get("/w/a") for s in fs.crash_states()} == {b"data"}


def test_name_durable_data_not() -> None:
    fs = MemoryFileSystem()
    fs.make_dir("/w")
    h = fs.create("/w/a")
    fs.sync_dir("/w", "d")
    h.pwrite(b"data", 0)
    assert {s.tree().get("/w/a") for s in fs.crash_states(fills=["clean"])} == {b"", b"data"}


def test_rename_is_atomic_and_keeps_the_inode() -> None:
    fs = MemoryFileSystem()
    synced_file(fs, "/w/tmp", b"content").close()
    synced_file(fs, "/w/final", b"previous").close()
    fs.rename("/w/tmp", "/w/final")
    states = fs.crash_states()
    trees = [{k: v for k, v in s.tree().items() if k != "/w"} for s in states]
    assert {"/w/tmp": b"content", "/w/final": b"previous"} in trees
    assert {"/w/final": b"content"} in trees
    assert len(trees) == 2
    fs.sync_dir("/w", "d")
    assert [s.tree() for s in fs.crash_states()] == [{"/w": None, "/w/final": b"content"}]


def test_rename_between_directories_is_atomic() -> None:
    fs = MemoryFileSystem()
    synced_file(fs, "/a/f", b"x").close()
    fs.make_dir("/b")
    fs.rename("/a/f", "/b/f")
    names = [sorted(k for k, v in s.tree().items() if v is not None) for s in fs.crash_states()]
    assert sorted(names) == [["/a/f"], ["/b/f"]]
    fs.sync_dir("/b", "d")  # either side's barrier makes the whole rename durable
    names = [sorted(k for k, v in s.tree().items() if v is not None) for s in fs.crash_states()]
    assert names == [["/b/f"]]


def test_unlink_is_pending_until_sync_dir() -> None:
    fs = MemoryFileSystem()
    synced_file(fs, "/w/a", b"x").close()
    fs.unlink("/w/a")
    assert {s.tree().get("/w/a") for s in fs.crash_states()} == {None, b"x"}
    fs.sync_dir("/w", "d")
    assert {s.tree().get("/w/a") for s in fs.crash_states()} == {None}


def test_writes_to_an_unlinked_file_survive_through_an_unsynced_unlink() -> None:
    fs = MemoryFileSystem()
    h = synced_file(fs, "/w/a", b"old")
    fs.unlink("/w/a")
    h.pwrite(b"new", 0)
    h.sync("s")
    assert {s.tree().get("/w/a") for s in fs.crash_states()} == {None, b"new"}


def test_truncate_is_a_pending_unit() -> None:
    fs = MemoryFileSystem()
    h = synced_file(fs, "/w/a", b"0123456789")
    h.truncate(4)
    assert fs.pending_units() == 1
    assert set(contents(fs.crash_states(), "/w/a")) == {b"0123456789", b"0123"}
    h.sync("s")
    assert contents(fs.crash_states(), "/w/a") == [b"0123"]


def test_make_dir_is_durable_unless_its_barrier_is_skipped() -> None:
    fs = MemoryFileSystem()
    fs.make_dir("/a/b")
    assert fs.sync_counts["make_dir"] == 2
    assert fs.snapshot().tree() == {"/a": None, "/a/b": None}
    skipping = MemoryFileSystem(skip_sync_sites={"make_dir"})
    skipping.make_dir("/a/b")
    assert skipping.snapshot().tree() == {}
    assert skipping.sync_counts["make_dir"] == 2


def test_files_below_an_unsynced_directory_vanish_with_it() -> None:
    fs = MemoryFileSystem(skip_sync_sites={"make_dir"})
    fs.make_dir("/w")
    h = fs.create("/w/a")
    h.sync("s")
    fs.sync_dir("/w", "d")
    trees = [s.tree() for s in fs.crash_states()]
    assert {} in trees and {"/w": None, "/w/a": b""} in trees and len(trees) == 2


# -- subsets and deduplication ------------------------------------------------------------


def test_candidate_subsets_counts() -> None:
    assert candidate_subsets(0) == [()]
    assert len(candidate_subsets(3)) == 8
    assert len(set(candidate_subsets(10))) == 1024
    masks = candidate_subsets(12, random_subsets=0)
    assert len(masks) == len(set(masks)) == 3 * 12 - 1
    assert (False,) * 12 in masks and (True,) * 12 in masks
    with_random = candidate_subsets(12, random_subsets=20, rng=random.Random(5))
    assert 35 < len(with_random) <= 55
    assert with_random == candidate_subsets(12, random_subsets=20, rng=random.Random(5))


def test_exhaustive_enumeration_counts_and_policy_switch() -> None:
    fs = MemoryFileSystem()
    h = synced_file(fs, "/w/a", bytes(512 * 12))
    for i in range(6):  # six one-sector overwrites with distinct bytes
        h.pwrite(bytes([i + 1]) * 512, 512 * i)
    assert fs.pending_units() == 6
    assert len(fs.crash_states()) == 64  # every subset; overwrites need no fill
    for i in range(6, 12):
        h.pwrite(bytes([i + 1]) * 512, 512 * i)
    assert fs.pending_units() == 12
    assert len(fs.crash_states(random_subsets=0)) == 3 * 12 - 1
    assert len(fs.crash_states(exhaustive_limit=12)) == 4096
    assert len(fs.crash_states(random_subsets=0, limit=5)) == 5


def test_states_are_deduplicated_by_content() -> None:
    fs = MemoryFileSystem()
    h = synced_file(fs, "/w/a", b"same" * 256)
    for _ in range(5):
        h.pwrite(b"same" * 256, 0)  # rewrites of identical bytes
    assert fs.pending_units() == 10
    states = fs.crash_states()
    assert len(states) == 1
    assert len({s.fingerprint() for s in states}) == 1


def test_fingerprint_depends_on_names_and_contents() -> None:
    a, b = MemoryFileSystem(), MemoryFileSystem()
    for fs in (a, b):
        synced_file(fs, "/w/x", b"1").close()
    assert a.fingerprint() == b.fingerprint()
    a.rename("/w/x", "/w/y")
    assert a.fingerprint() != b.fingerprint()


def test_random_subsets_are_seeded() -> None:
    fs = MemoryFileSystem()
    h = synced_file(fs, "/w/a", bytes(512 * 16))
    for i in range(16):
        h.pwrite(bytes([i + 1]) * 512, 512 * i)
    one = [s.fingerprint() for s in fs.crash_states(seed=1)]
    assert one == [s.fingerprint() for s in fs.crash_states(seed=1)]
    assert one != [s.fingerprint() for s in fs.crash_states(seed=2)]
    assert one == [s.fingerprint() for s in fs.crash_states(rng=random.Random(1))]


# -- the operation log and replay -------------------------------------------------------


def workload(fs: MemoryFileSystem) -> None:
    fs.make_dir("/w")
    h = fs.create("/w/seg")
    for lsn in range(1, 4):
        h.pwrite(bytes([lsn]) * 100, 100 * (lsn - 1))
        h.sync("append")
        if lsn == 1:
            fs.sync_dir("/w", "create")
        fs.mark_ack(lsn)
    h.close()


def test_operation_log() -> None:
    fs = MemoryFileSystem()
    workload(fs)
    kinds = [op.kind for op in fs.ops]
    assert kinds[:4] == ["mkdir", "sync_dir", "create", "write"]
    assert kinds.count("write") == 3 and kinds.count("note") == 3
    assert fs.op_count == len(kinds)
    assert [op.index for op in fs.ops] == list(range(fs.op_count))
    write = fs.ops[3]
    assert (write.path, write.offset, write.length, write.data) == ("/w/seg", 0, 100, b"\1" * 100)
    assert fs.ops[1].site == "make_dir" and fs.ops[4].site == "append"
    assert fs.notes() == [1, 2, 3]
    first_ack = next(op.index for op in fs.ops if op.kind == "note")
    assert fs.notes(before=first_ack) == [] and fs.notes(before=first_ack + 1) == [1]
    fs.note("phase", "recovery")
    assert fs.notes("phase") == ["recovery"]
    assert fs.sync_counts == {"make_dir": 1, "append": 3, "create": 1}


def test_replay_reproduces_every_prefix() -> None:
    fs = MemoryFileSystem()
    workload(fs)
    assert fs.replay(fs.op_count).fingerprint() == fs.fingerprint()
    assert fs.replay(0).tree() == {}
    prints = []
    for k, state in fs.replays():
        assert state.op_count == k
        assert state.fingerprint() == fs.replay(k).fingerprint()
        prints.append({s.fingerprint() for s in state.crash_states()})
    assert len(prints) == fs.op_count + 1
    with pytest.raises(IndexError):
        fs.replay(fs.op_count + 1)


def test_crash_at_every_op_keeps_acknowledged_records() -> None:
    fs = MemoryFileSystem()
    workload(fs)
    total = 0
    for _, state in fs.replays():
        acked = state.notes("ack")
        for image in state.crash_states():
            total += 1
            data = image.tree().get("/w/seg") or b""
            for lsn in acked:
                assert isinstance(lsn, int)
                assert data[100 * (lsn - 1) : 100 * lsn] == bytes([lsn]) * 100
    assert total > 20


def test_skipped_barrier_loses_acknowledged_data() -> None:
    fs = MemoryFileSystem(skip_sync_sites={"append"})
    workload(fs)
    assert fs.sync_counts["append"] == 3
    assert all(op.skipped for op in fs.ops if op.site == "append")
    assert fs.snapshot().tree()["/w/seg"] == b""  # nothing was made durable


def test_fork_and_images_start_fresh_logs() -> None:
    fs = MemoryFileSystem()
    workload(fs)
    fork = fs.fork()
    assert fork.fingerprint() == fs.fingerprint() and fork.op_count == fs.op_count
    fork.unlink("/w/seg")
    assert "/w/seg" in fs.tree()
    image = fs.crash_states()[0]
    assert image.op_count == 0 and image.pending_units() == 0
    h = image.open_write("/w/seg")
    h.pwrite(b"more", 300)
    original = fs.tree()["/w/seg"]
    assert original is not None and len(original) == 300
    assert image.replay(0).tree()["/w/seg"] == original
    assert image.replay(1).tree()["/w/seg"] == original + b"more"


def test_recovery_can_crash_too() -> None:
    fs = MemoryFileSystem()
    h = synced_file(fs, "/w/seg", b"x" * 1000)
    h.pwrite(b"torn" * 100, 1000)
    for image in fs.crash_states():
        r = image.open_write("/w/seg")
        r.truncate(1000)  # recovery cuts the tail...
        r.sync("recovery")  # ...durably
        for again in image.crash_states():
            data = again.tree()["/w/seg"]
            assert data is not None and data[:1000] == b"x" * 1000
        assert image.snapshot().tree()["/w/seg"] == b"x" * 1000


# -- faults -----------------------------------------------------------------------------


def test_fail_nth_write() -> None:
    fs = MemoryFileSystem()
    h = synced_file(fs, "/w/a", b"")
    fault = fs.fail("write", nth=2, error=errno.ENOSPC)
    h.pwrite(b"1", 0)
    err = raises(errno.ENOSPC, lambda: h.pwrite(b"2", 1), "write")
    assert err.path == "/w/a"
    h.pwrite(b"3", 1)  # times=1: only that call
    assert h.pread(10, 0) == b"13"
    assert fault.fired == 1
    assert fs.ops[-2].error == errno.ENOSPC


def test_short_write_leaves_a_pending_prefix() -> None:
    fs = MemoryFileSystem()
    h = synced_file(fs, "/w/a", b"")
    fs.fail("write", short=600)
    raises(errno.EIO, lambda: h.pwrite(b"z" * 1000, 0), "write")
    assert h.pread(2000, 0) == b"z" * 600
    assert fs.ops[-1].data == b"z" * 600 and fs.ops[-1].error == errno.EIO
    sizes = {len(d or b"") for d in contents(fs.crash_states(fills=["clean"]), "/w/a")}
    assert sizes == {0, 512, 600}


def test_failed_sync_covers_nothing_and_later_syncs_do_not_repair_it() -> None:
    fs = MemoryFileSystem()
    h = synced_file(fs, "/w/a", b"")
    h.pwrite(b"lost?", 0)
    fs.fail("sync", error=errno.EIO)
    raises(errno.EIO, lambda: h.sync("s"), "fdatasync")
    h.sync("s")  # succeeds, but proves nothing about the failed window
    assert b"" in contents(fs.crash_states(), "/w/a")
    h.pwrite(b"later", 512)
    h.sync("s")  # writes after the failure are made durable as usual
    heads = set()
    for data in contents(fs.crash_states(), "/w/a"):
        assert data is not None and data[5:] == bytes(507) + b"later"
        heads.add(data[:5])
    assert len(heads) == 3 and {b"lost?", bytes(5)} < heads  # persisted, zeros, garbage


def test_failed_sync_dir() -> None:
    fs = MemoryFileSystem()
    synced_file(fs, "/w/a", b"x").close()
    fs.unlink("/w/a")
    fs.fail("sync_dir")
    raises(errno.EIO, lambda: fs.sync_dir("/w", "d"), "fsync directory")
    fs.sync_dir("/w", "d")
    assert {s.tree().get("/w/a") for s in fs.crash_states()} == {None, b"x"}


@pytest.mark.parametrize(
    ("kind", "call"),
    [
        ("rename", lambda fs: fs.rename("/w/a", "/w/b")),
        ("unlink", lambda fs: fs.unlink("/w/a")),
        ("create", lambda fs: fs.create("/w/new")),
        ("truncate", lambda fs: fs.open_write("/w/a").truncate(0)),
        ("read", lambda fs: fs.open_read("/w/a").pread(1, 0)),
        ("open", lambda fs: fs.open_read("/w/a")),
        ("mkdir", lambda fs: fs.make_dir("/w/sub")),
        ("list", lambda fs: fs.list_dir("/w")),
        ("lock", lambda fs: fs.lock("/w/LOCK", exclusive=True)),
        ("stat", lambda fs: fs.open_read("/w/a").size()),
    ],
)
def test_fault_kinds_leave_state_unchanged(
    kind: str, call: Callable[[MemoryFileSystem], object]
) -> None:
    fs = MemoryFileSystem()
    synced_file(fs, "/w/a", b"abc").close()
    before, calls = fs.fingerprint(), fs.calls[kind]
    fs.fail(kind, error=errno.EIO)
    raises(errno.EIO, lambda: call(fs))
    assert fs.fingerprint() == before
    assert fs.calls[kind] == calls + 1


def test_sticky_faults_and_validation() -> None:
    fs = MemoryFileSystem()
    h = synced_file(fs, "/w/a", b"")
    fs.fail("write", nth=2, times=None, error=errno.ENOSPC)
    h.pwrite(b"a", 0)
    for _ in range(3):
        raises(errno.ENOSPC, lambda: h.pwrite(b"b", 1))
    fs.clear_faults()
    h.pwrite(b"b", 1)
    assert "sync_dir" in FAULT_KINDS
    with pytest.raises(ValueError):
        fs.fail("explode")
    with pytest.raises(ValueError):
        fs.fail("sync", short=3)
    with pytest.raises(ValueError):
        fs.fail("write", nth=0)


def test_skipped_sites_do_nothing_and_are_counted() -> None:
    fs = MemoryFileSystem(skip_sync_sites={"data"})
    fs.make_dir("/w")
    h = fs.create("/w/a")
    fs.sync_dir("/w", "dir")
    h.pwrite(b"abc", 0)
    h.sync("data")
    h.sync("data")
    assert fs.sync_counts == {"make_dir": 1, "dir": 1, "data": 2}
    assert fs.snapshot().tree()["/w/a"] == b""
    fs.skip_sync_sites.clear()
    h.sync("data")
    assert fs.snapshot().tree()["/w/a"] == b"abc"


# -- real directories ----------------------------------------------------------------------


def test_materialize_and_load_round_trip(tmp_path: Path) -> None:
    fs = MemoryFileSystem()
    synced_file(fs, "/w/sub/a", b"alpha").close()
    synced_file(fs, "/w/b", b"\0" * 10).close()
    fs.make_dir("/w/empty")
    fs.materialize(str(tmp_path / "out"), "/w")
    real = OsFileSystem()
    assert sorted(real.list_dir(str(tmp_path / "out")), key=lambda e: e.name) == [
        Entry("b", True),
        Entry("empty", False),
        Entry("sub", False),
    ]
    assert (tmp_path / "out" / "sub" / "a").read_bytes() == b"alpha"
    loaded = MemoryFileSystem.from_directory(str(tmp_path / "out"), at="/w")
    assert loaded.fingerprint() == fs.fingerprint()
    assert loaded.op_count == 0 and loaded.pending_units() == 0
    at_root = MemoryFileSystem.from_directory(str(tmp_path / "out"))
    assert at_root.tree()["/sub/a"] == b"alpha"


def test_crash_images_materialize_for_real_reopen(tmp_path: Path) -> None:
    fs = MemoryFileSystem()
    h = synced_file(fs, "/w/a", b"x" * 10)
    h.pwrite(b"y" * 10, 10)
    for i, image in enumerate(fs.crash_states()):
        dest = tmp_path / str(i)
        image.materialize(str(dest), "/w")
        real = OsFileSystem().open_read(str(dest / "a"))
        try:
            assert real.pread(100, 0) == image.tree()["/w/a"]
        finally:
            real.close()


# -- threads ---------------------------------------------------------------------------


def test_concurrent_writers() -> None:
    fs = MemoryFileSystem()
    fs.make_dir("/w")

    def writer(n: int) -> None:
        h = fs.create(f"/w/f{n}")
        for i in range(200):
            h.pwrite(bytes([n]) * 10, i * 10)
            if i % 50 == 0:
                h.sync("t")
        h.close()
        fs.mark_ack(n)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tree = fs.tree()
    assert all(tree[f"/w/f{n}"] == bytes([n]) * 2000 for n in range(8))
    assert sorted(v for v in fs.notes() if isinstance(v, int)) == list(range(8))
    assert fs.replay(fs.op_count).fingerprint() == fs.fingerprint()


# -- differential: random operations give the same results on both -------------------------


def _outcome(fn: Callable[[], object]) -> object:
    try:
        result = fn()
    except StorageError as exc:
        return ("error", exc.op, exc.errno)
    if isinstance(result, list):
        return sorted(result, key=lambda e: e.name)
    return result if isinstance(result, bytes | int | bool | type(None)) else "handle"


def _real_tree(fs: FileSystem, root: str) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for entry in fs.list_dir(root):
        path = f"{root}/{entry.name}"
        if entry.is_file:
            h = fs.open_read(path)
            out[path] = h.pread(h.size() + 1, 0)
            h.close()
        else:
            out[path] = None
            out.update(_real_tree(fs, path))
    return out


def _step(env: Env, opened: list[FileHandle], choice: int, x: str, y: str, n: int) -> object:
    fs, data = env.fs, bytes([n % 256]) * (n % 700 + 1)
    if choice >= 6 and not opened:
        choice %= 6

    def handle() -> FileHandle:
        return opened[n % len(opened)]

    def write() -> None:
        handle().pwrite(data, n % 1200)

    def truncate() -> None:
        handle().truncate(n % 1200)

    calls: dict[int, Callable[[], object]] = {
        0: lambda: opened.append(fs.create(env.p(x))),
        1: lambda: opened.append(fs.open_write(env.p(x))),
        2: lambda: fs.make_dir(env.p(x)),
        3: lambda: fs.rename(env.p(x), env.p(y)),
        4: lambda: fs.unlink(env.p(x)),
        5: lambda: fs.list_dir(env.p(x)),
        6: write,
        7: truncate,
        8: lambda: handle().pread(n % 1200, n % 900),
    }
    return _outcome(calls[choice])


@pytest.mark.parametrize("seed", range(5))
def test_random_operations_match_the_real_file_system(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    memory = MemoryFileSystem()
    memory.make_dir("/r")
    envs = [Env(OsFileSystem(), str(tmp_path)), Env(memory, "/r")]
    names = ["a", "b", "d", "d/a", "d/e", "a/x", "d/e/f", "d/e/f/g"]
    handles: list[list[FileHandle]] = [[], []]
    for _ in range(300):
        args = (rng.randrange(9), rng.choice(names), rng.choice(names), rng.randrange(5000))
        outcomes = [_step(env, opened, *args) for env, opened in zip(envs, handles, strict=True)]
        assert outcomes[0] == outcomes[1], args
        assert _real_tree(envs[0].fs, envs[0].root) == {
            k.replace("/r", envs[0].root, 1): v for k, v in memory.tree("/r").items()
        }
    for opened in handles:
        for h in opened:
            h.close()
