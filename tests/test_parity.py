"""Real-path parity: the in-memory file system and the real one agree.

1. Crash images. A workload runs on :class:`MemoryFileSystem`; a seeded sample of the crash
   images it could leave (taken at barriers and at random points of its operation log) is
   written into real directories with ``materialize`` and reopened with the real
   ``OsFileSystem``. Records, the recovery report (cuts, quarantines, removed files) and the
   directory left behind must equal reopening the same image in memory.

2. System calls. The same small workload runs in a child process under ``strace`` on real
   files and here on a recording ``MemoryFileSystem``. The mutating system calls on the log
   directory (``pwrite`` with offset and bytes, ``ftruncate``, ``fdatasync``, directory
   ``fsync``, exclusive creates, ``rename``, ``unlink``, ``mkdir``) must be the recorded
   operations, one for one and byte for byte: a write that bypasses the seam, or data
   still sitting in a Python buffer when ``fdatasync`` runs, shows up as a difference.

   Determinism: the workload passes a fixed clock (every timestamp, and so every CRC and
   digest, is the same in both runs) and pins ``uuid.uuid4`` while it runs, the only source
   of the log id; so the comparison includes every byte, log id and checksums included.
   The one field that must differ, the writer's pid inside ``LOCK``, is zeroed on both
   sides before comparing.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

import segwal
from conftest import FakeClock, payload
from segwal.testing import MemoryFileSystem

DIR = "/wal"
SEGMENT_BYTES = 700
SAMPLE = 120  # crash images per recovery mode
FIXED_LOG_ID = uuid.UUID(int=0x5E6A1_0000_0000_0000_0000_0000_0042)


# -- 1. crash images on real files ----------------------------------------------------------


def build_history() -> MemoryFileSystem:
    """A workload with every kind of operation: appends, batches, size and forced
    rotations, a checkpoint, a rewind, holds, an unsynced tail, close and reopen."""
    fs = MemoryFileSystem()
    clock = FakeClock()
    wal = segwal.open(DIR, filesystem=fs, segment_bytes=SEGMENT_BYTES, sync="always", clock=clock)
    lsn = 1
    for n in (1, 3, 1, 2, 5, 1):
        wal.append_batch([payload(lsn + i) for i in range(n)])
        lsn += n
        clock.advance(0.001)
    wal.rotate()
    wal.hold("reader", wal.segments()[1].first_lsn)
    wal.append_batch([payload(n) for n in range(lsn, lsn + 4)])
    wal.truncate_before(wal.segments()[1].first_lsn)
    wal.close()
    wal = segwal.open(DIR, filesystem=fs, segment_bytes=SEGMENT_BYTES, sync="never", clock=clock)
    wal.truncate_after(wal.last_lsn - 2)
    lsn = wal.next_lsn
    for n in (2, 1, 4):
        wal.append_batch([payload(lsn + i, 40) for i in range(n)])
        lsn += n
    wal.sync()
    wal.release("reader")
    for n in (3, 1, 6):  # unsynced when the history ends: torn tails in the images
        wal.append_batch([payload(lsn + i, 90) for i in range(n)])
        lsn += n
    return fs


def sample_images(fs: MemoryFileSystem, count: int, seed: int) -> list[MemoryFileSystem]:
    """Crash images after barriers and at random points, deduplicated, then sampled."""
    rng = random.Random(seed)
    barriers = {k for k in range(1, fs.op_count + 1) if fs.ops[k - 1].kind in ("sync", "sync_dir")}
    points = barriers | set(rng.sample(range(fs.op_count + 1), min(40, fs.op_count + 1)))
    seen: set[str] = set()
    pool: list[MemoryFileSystem] = []
    for k, state in fs.replays():
        if k not in points:
            continue
        for image in state.crash_states(seed=k, random_subsets=4, exhaustive_limit=4, limit=12):
            key = image.fingerprint()
            if key not in seen:
                seen.add(key)
                pool.append(image)
    assert len(pool) >= count, f"only {len(pool)} distinct images"
    return rng.sample(pool, count)


def _name(path: str | None) -> str | None:
    return None if path is None else os.path.basename(path)


def outcome(path: str, fs: Any, recovery: str) -> tuple[Any, ...]:
    """What reopening the log at ``path`` gives, with paths reduced to file names."""
    try:
        wal = segwal.open(
            path,
            filesystem=fs,
            segment_bytes=SEGMENT_BYTES,
            recovery=recovery,  # type: ignore[arg-type]
            clock=FakeClock(),
        )
    except segwal.SegwalError as exc:
        detail = (type(exc).__name__, str(exc).replace(path, "<log>"))
        return ("error", detail)
    try:
        report = wal.recovery
        cuts = tuple(
            (_name(c.path), c.offset, c.length, c.lsn, c.reason, _name(c.quarantine_path))
            for c in report.cuts
        )
        records = tuple((r.lsn, r.type, r.timestamp_us, r.payload) for r in wal.replay())
        summary = (
            report.created,
            report.segments,
            report.first_lsn,
            report.last_lsn,
            cuts,
            tuple(map(_name, report.quarantined)),
            tuple(map(_name, report.removed_temp_files)),
            tuple(map(_name, report.removed_obsolete)),
            report.rewound_to,
            tuple(map(_name, report.foreign_files)),
            report.sealed_tail,
            wal.durable_lsn,
            tuple((s.first_lsn, s.last_lsn, s.sealed, s.size_bytes) for s in wal.segments()),
        )
    finally:
        wal.close()
    return ("ok", summary, records)


def real_tree(path: Path) -> dict[str, bytes | None]:
    if not path.exists():
        return {}
    out: dict[str, bytes | None] = {}
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path).as_posix()
        out[rel] = p.read_bytes() if p.is_file() else None
    return out


def memory_tree(fs: MemoryFileSystem) -> dict[str, bytes | None]:
    tree = fs.tree("/")
    if DIR not in tree:
        return {}
    return {k[len(DIR) + 1 :]: v for k, v in fs.tree(DIR).items()}


def _without_pid(tree: dict[str, bytes | None]) -> dict[str, bytes | None]:
    lock = tree.get("LOCK")
    if lock is not None and len(lock) >= 16:
        tree = {**tree, "LOCK": lock[:8] + bytes(8) + lock[16:]}
    return tree


@pytest.fixture(scope="module")
def history() -> MemoryFileSystem:
    return build_history()


@pytest.mark.parametrize("recovery", ["tolerate_tail", "truncate"])
def test_crash_images_reopen_alike_on_real_files(
    history: MemoryFileSystem, recovery: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An image without a segment gets a new log, with a new log id: the same one on both.
    monkeypatch.setattr(uuid, "uuid4", lambda: FIXED_LOG_ID)
    images = sample_images(history, SAMPLE, seed=0x9A1 + len(recovery))
    kinds: dict[str, int] = {}
    for i, image in enumerate(images):
        where = f"image {i} ({image.crash_info})"
        real = tmp_path / f"img{i}"
        real.mkdir()
        log = real / "wal"
        if DIR in image.tree("/"):
            image.materialize(str(log), DIR)
        assert memory_tree(image) == real_tree(log), f"{where}: materialize is not faithful"
        in_memory = outcome(DIR, image, recovery)
        on_disk = outcome(str(log), None, recovery)
        assert on_disk == in_memory, f"{where}: real and in-memory recovery differ"
        # Recovery changed both directories the same way, byte for byte.
        assert _without_pid(real_tree(log)) == _without_pid(memory_tree(image)), where
        kinds[in_memory[0]] = kinds.get(in_memory[0], 0) + 1
        if in_memory[0] == "ok" and in_memory[1][4]:
            kinds["cut"] = kinds.get("cut", 0) + 1
        shutil.rmtree(real)
    # The sample is not trivial: it includes recoveries that had to cut a torn tail.
    assert kinds.get("ok", 0) > 0 and kinds.get("cut", 0) > 0, kinds


# -- 2. system calls under strace -----------------------------------------------------------

WORKLOAD = r'''
import uuid as _uuid

import segwal
from segwal.storage.fileio import OsFileSystem


def run(parent, fs, fixed_log_id):
    """The strace workload; ``fs`` None means the real file system."""
    real_uuid4 = _uuid.uuid4
    _uuid.uuid4 = lambda: fixed_log_id
    try:
        _run(parent.rstrip("/") + "/wal", fs)
    finally:
        _uuid.uuid4 = real_uuid4


def _run(path, fs):
    ticks = [1_700_000_000_000_000]

    def clock():
        ticks[0] += 1000
        return ticks[0]

    def body(lsn, size):
        return bytes((lsn * 31 + i) & 0xFF for i in range(size))

    def open_(mode, **kw):
        return segwal.open(
            path, filesystem=fs, segment_bytes=1200, sync=mode, clock=clock, **kw
        )

    wal = open_("always")
    for n in (1, 2, 1, 3):
        first = wal.next_lsn
        wal.append_batch([body(first + i, 20 + 13 * i) for i in range(n)])
    wal.append(body(wal.next_lsn, 300))  # size rotation
    wal.rotate()
    wal.hold("reader", wal.segments()[1].first_lsn)
    wal.append_batch([body(wal.next_lsn + i, 50) for i in range(4)])
    wal.truncate_before(wal.segments()[1].first_lsn)
    wal.close()

    wal = open_("never")
    for n in (2, 5):
        first = wal.next_lsn
        wal.append_batch([body(first + i, 64) for i in range(n)])
    wal.sync()
    wal.truncate_after(wal.last_lsn - 3)
    wal.append(body(wal.next_lsn, 10))
    wal.release("reader")
    tail = wal.segments()[-1].path
    wal.close()

    # A torn write at the tail, through the seam, for recovery to cut.
    fsys = fs if fs is not None else OsFileSystem()
    handle = fsys.open_write(tail)
    handle.pwrite(b"\x01" * 40, handle.size())
    handle.close()
    wal = open_("always")
    wal.append(b"after the cut")
    tail = wal.segments()[-1].path
    wal.close()

    handle = fsys.open_write(tail)
    handle.pwrite(b"\x02" * 33, handle.size())
    handle.close()
    wal = open_("always", recovery="truncate")  # the cut bytes are copied aside first
    wal.append(b"after the quarantine copy")
    wal.close()
'''

CHILD = WORKLOAD + "\nimport sys, uuid\nrun(sys.argv[1], None, uuid.UUID(int=int(sys.argv[2])))\n"

TRACED = (
    "write,pwrite64,pwritev,pwritev2,ftruncate,fsync,fdatasync,rename,renameat,renameat2,"
    "unlink,unlinkat,open,openat,mkdir,mkdirat,close"
)
STRING_LIMIT = 4096


def _strace_usable() -> str | None:
    """None when strace can trace a child here, else why not."""
    exe = shutil.which("strace")
    if exe is None:
        return "strace is not installed (Debian package: strace)"
    probe = subprocess.run(
        [exe, "-f", "-o", os.devnull, "/bin/true"], capture_output=True, text=True, timeout=60
    )
    if probe.returncode != 0:
        return f"strace cannot trace here (ptrace not permitted?): {probe.stderr.strip()}"
    return None


def _unquote(text: str) -> bytes:
    """Decode a string strace printed with -xx (every byte as \\xNN)."""
    assert not text.endswith("..."), "strace cut a string: raise STRING_LIMIT"
    out = bytearray()
    i = 0
    while i < len(text):
        if text.startswith("\\x", i):
            out.append(int(text[i + 2 : i + 4], 16))
            i += 4
        elif text[i] == "\\":
            escapes = {"n": 10, "t": 9, "r": 13, '"': 34, "\\": 92, "v": 11, "f": 12}
            out.append(escapes[text[i + 1]])
            i += 2
        else:
            out.append(ord(text[i]))
            i += 1
    return bytes(out)


def _split_args(args: str) -> list[str]:
    """Split a syscall's argument list at top-level commas (strings kept whole)."""
    parts, depth, quoted, start = [], 0, False, 0
    i = 0
    while i < len(args):
        ch = args[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(args[start:i].strip())
            start = i + 1
        i += 1
    parts.append(args[start:].strip())
    return parts


def _string(arg: str) -> bytes:
    arg = arg.strip()
    if arg.endswith("..."):
        raise AssertionError("strace cut a string: raise STRING_LIMIT")
    assert arg.startswith('"') and arg.endswith('"'), arg
    return _unquote(arg[1:-1])


def _join_unfinished(lines: list[str]) -> list[str]:
    """Merge ``<unfinished ...>`` / ``<... resumed>`` pairs of ``strace -f``."""
    pending: dict[str, str] = {}
    out = []
    for line in lines:
        pid, _, rest = line.partition(" ")
        rest = rest.lstrip()  # strace pads the pid column: short pids leave extra spaces
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest[: -len("<unfinished ...>")].rstrip()
            continue
        if rest.startswith("<... ") and pid in pending:
            tail = rest.split("resumed>", 1)[1]
            rest = pending.pop(pid) + tail
        out.append(f"{pid} {rest}")
    return out


_CALL = re.compile(r"^(\w+)\((.*)\)\s+=\s+(\S+)")


def parse_strace(text: str, root: str) -> list[tuple[Any, ...]]:
    """The mutating operations on files below ``root``, in the seam's vocabulary."""
    root = os.path.realpath(root)
    fds: dict[int, str] = {}  # one process: its threads share the descriptors
    events: list[tuple[Any, ...]] = []

    def rel(path: str) -> str | None:
        path = os.path.normpath(path)
        if path == root:
            return "."
        if path.startswith(root + "/"):
            return path[len(root) + 1 :]
        return None

    for line in _join_unfinished([ln for ln in text.splitlines() if ln.strip()]):
        _pid, _, call = line.partition(" ")
        if call.startswith(("+++", "---")) or "(" not in call:
            continue
        match = _CALL.match(call)
        if match is None:
            continue
        name, args_text, ret = match.group(1), match.group(2), match.group(3)
        if ret.startswith("-") or ret == "?":
            continue  # failed or never returned: no effect the seam records
        args = _split_args(args_text)
        if name in ("open", "openat"):
            path = _string(args[1] if name == "openat" else args[0]).decode("utf-8", "replace")
            fd = int(ret)
            where = rel(path)
            flags = args[2] if name == "openat" else args[1]
            if where is None:
                fds.pop(fd, None)
                continue
            fds[fd] = where
            if "O_CREAT" in flags and "O_EXCL" in flags:
                events.append(("create", where))
        elif name == "close":
            fds.pop(int(args[0]), None)
        elif name in ("write", "pwrite64", "pwritev", "pwritev2"):
            where = fds.get(int(args[0]))
            if where is None:
                continue
            if name in ("write", "pwritev", "pwritev2"):
                raise AssertionError(f"{name} on {where}: the seam only uses pwrite: {line}")
            data = _string(args[1])
            written = int(ret)
            assert written == len(data) == int(args[2]), line
            events.append(("write", where, int(args[3]), data))
        elif name == "ftruncate":
            where = fds.get(int(args[0]))
            if where is not None:
                events.append(("truncate", where, int(args[1])))
        elif name in ("fdatasync", "fsync"):
            where = fds.get(int(args[0]))
            if where is not None:
                events.append(("sync" if name == "fdatasync" else "fsync", where))
        elif name in ("rename", "renameat", "renameat2"):
            if name == "rename":
                src, dst = _string(args[0]), _string(args[1])
            else:
                src, dst = _string(args[1]), _string(args[3])
            a, b = rel(src.decode()), rel(dst.decode())
            if a is not None or b is not None:
                events.append(("rename", a, b))
        elif name in ("unlink", "unlinkat"):
            where = rel(_string(args[0] if name == "unlink" else args[1]).decode())
            if where is not None:
                events.append(("unlink", where))
        elif name in ("mkdir", "mkdirat"):
            where = rel(_string(args[0] if name == "mkdir" else args[1]).decode())
            if where is not None:
                events.append(("mkdir", where))
    return events


def memory_events(fs: MemoryFileSystem) -> list[tuple[Any, ...]]:
    """The recorded operations, in the same vocabulary (paths relative to ``/``)."""

    def rel(path: str) -> str:
        path = os.path.normpath(path)
        return "." if path == "/" else path.lstrip("/")

    events: list[tuple[Any, ...]] = []
    for op in fs.ops:
        if op.error is not None or op.skipped:
            raise AssertionError(f"unexpected fault in the parity workload: {op}")
        if op.kind == "write":
            events.append(("write", rel(op.path), op.offset, op.data))
        elif op.kind == "truncate":
            events.append(("truncate", rel(op.path), op.length))
        elif op.kind == "sync":
            events.append(("sync", rel(op.path)))
        elif op.kind == "sync_dir":
            # The real seam opens the directory and fsyncs it.
            events.append(("fsync", rel(op.path)))
        elif op.kind == "create":
            events.append(("create", rel(op.path)))
        elif op.kind == "rename":
            events.append(("rename", rel(op.path), rel(op.target)))
        elif op.kind == "unlink":
            events.append(("unlink", rel(op.path)))
        elif op.kind == "mkdir":
            events.append(("mkdir", rel(op.path)))
        elif op.kind in ("lock", "note", "map_write"):
            # No mutating system call of their own: "lock" (LOCK created by the lock call, a
            # plain O_CREAT open on disk), notes, and "map_write", a store into LOCK's shared
            # mapping (docs/FORMAT.md "LOCK mapping"): memory, which strace cannot see. Its
            # bytes are still compared, in the final directories below.
            continue
        else:
            raise AssertionError(f"an operation the parity test does not know: {op}")
    return events


def _normalise(events: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Zero the pid that the writer publishes in LOCK (bytes 8..16 of its record)."""
    out = []
    for event in events:
        if event[0] == "write" and event[1].endswith("LOCK") and event[2] == 0:
            data = event[3]
            event = (*event[:3], data[:8] + bytes(8) + data[16:])
        out.append(event)
    return out


def _describe(event: tuple[Any, ...]) -> str:
    if event[0] == "write":
        return f"write {event[1]} @{event[2]} {len(event[3])} bytes {event[3][:24].hex()}"
    return " ".join(map(str, event))


def test_strace_matches_the_recording(tmp_path: Path) -> None:
    reason = _strace_usable()
    if reason is not None:
        pytest.skip(reason)
    parent = tmp_path / "real"
    parent.mkdir()
    trace = tmp_path / "trace.txt"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    cmd = [
        shutil.which("strace") or "strace",
        "-f",
        "-qq",
        "-e",
        f"trace={TRACED}",
        "-s",
        str(STRING_LIMIT),
        "-xx",
        "-o",
        str(trace),
        sys.executable,
        "-B",
        str(script),
        str(parent),
        str(FIXED_LOG_ID.int),
    ]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert run.returncode == 0, f"child failed:\n{run.stdout}\n{run.stderr}"
    text = trace.read_text()
    # With -f and no -ff every line starts with the pid; make sure it does.
    lines = [ln if ln[:1].isdigit() else f"0 {ln}" for ln in text.splitlines()]
    real = _normalise(parse_strace("\n".join(lines), str(parent)))

    namespace: dict[str, Any] = {}
    exec(compile(WORKLOAD, "<parity workload>", "exec"), namespace)
    fs = MemoryFileSystem()
    namespace["run"]("/", fs, FIXED_LOG_ID)
    recorded = _normalise(memory_events(fs))

    assert len(recorded) > 100, "the workload is too small to mean anything"
    kinds = {e[0] for e in recorded}
    assert kinds >= {"write", "truncate", "sync", "fsync", "create", "rename", "unlink", "mkdir"}
    for i, (a, b) in enumerate(zip(real, recorded, strict=False)):
        if a != b:
            context = "\n".join(
                f"  {j}: real {_describe(real[j]) if j < len(real) else '-'}"
                f" | memory {_describe(recorded[j]) if j < len(recorded) else '-'}"
                for j in range(max(0, i - 3), min(max(len(real), len(recorded)), i + 4))
            )
            pytest.fail(f"system call {i} differs from the recording:\n{context}")
    assert len(real) == len(recorded), (
        f"{len(real)} system calls, {len(recorded)} recorded operations; first extra: "
        + _describe(
            (real if len(real) > len(recorded) else recorded)[min(len(real), len(recorded))]
        )
    )
    # The final directories agree too (the child's LOCK says pid 0: closed).
    on_disk = real_tree(parent / "wal")
    in_memory = memory_tree(fs)
    assert on_disk == in_memory


def test_strace_parser_sees_a_bypassing_write(tmp_path: Path) -> None:
    """The comparison is not blind: a write the seam did not make shows up."""
    root = tmp_path
    trace = "\n".join(
        [
            f'7 openat(AT_FDCWD, "{root}/wal/x.wal", O_RDWR|O_CLOEXEC) = 5',
            '7 pwrite64(5, "\\x61\\x62", 2, 128) = 2',
            '7 write(1, "\\x0a", 1) = 1',
            "7 fdatasync(5) = 0",
            "7 close(5) = 0",
            '7 pwrite64(5, "\\x63", 1, 0) = 1',
        ]
    )
    assert parse_strace(trace, str(root)) == [
        ("write", "wal/x.wal", 128, b"ab"),
        ("sync", "wal/x.wal"),
    ]
    bypass = trace + f'\n7 openat(AT_FDCWD, "{root}/wal/y", O_WRONLY|O_CREAT) = 6\n'
    bypass += '7 write(6, "\\x7a", 1) = 1'
    with pytest.raises(AssertionError, match="only uses pwrite"):
        parse_strace(bypass, str(root))
