"""The I/O seam is the only way to the disk: nothing outside it touches log data.

Every file operation of the library goes through ``segwal.storage.fileio`` (``OsFileSystem``, the
real one) so that ``segwal.testing.MemoryFileSystem`` sees, records, crashes and fails all
of them. A direct ``open``, ``os.*`` or ``shutil`` call anywhere else would escape the
crash tests, so:

* an AST scan of every module of ``src/segwal`` except the seam itself (``fileio.py``)
  and its in-memory twin (the ``testing`` package) fails on builtin ``open``, ``io.open``, any
  ``os`` attribute that is not on a short allowlist (pure path-string helpers, the pid,
  the environment), disk-touching ``os.path`` functions, and any use of ``shutil``,
  ``mmap``, ``fcntl``, ``pathlib`` or ``tempfile``; dynamic escapes (``getattr(os, ...)``,
  ``__import__``, ``importlib``) count too;
* the archive's modules that write files which are not an open log's (the ``file://``
  store, restore's and mirror's directories) are listed in ``OUTSIDE_THE_LOG`` with the
  tests that hold them instead;
* the CLI (the ``cli`` package) and the demo (``cli/demo.py``) are held to the same rule, since
  they work through the public API; the demo may also create a temporary directory, spawn and
  kill its child and write its acknowledgement lines to its stdout pipe (listed below
  with the reason);
* at run time, a whole workload on ``MemoryFileSystem`` (create, append, rotate, hold,
  checkpoint, rewind, retention, read, replay, verify, readonly open, recovery) runs with
  the ``os`` file functions and ``open`` wrapped: none may be called from library code.
"""

from __future__ import annotations

import ast
import builtins
import io
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import segwal
from conftest import FakeClock, payload
from segwal.testing import MemoryFileSystem

SRC = Path(segwal.__file__).resolve().parent
SEAM = {"storage/fileio.py"}  # and the in-memory file system of the testing package
# Files that are not an open log's: each is held to tests of its own instead.
OUTSIDE_THE_LOG = {
    "archive/local.py": "the file:// object store, a directory of objects that is no log "
    "(tests/test_store_local.py checks its fsync order under strace and SIGKILLs it)",
    "archive/restore.py": "builds a new directory beside the target before it is a log, "
    "then opens it through segwal.open (tests/test_archive_restore.py, the SIGKILL loop)",
    "archive/mirror.py": "copies verified segments into a follower's directory, which is "
    "only ever opened readonly (the mirror tests of tests/test_archive_restore.py)",
    "archive/dictobjects.py": "installs compression dictionaries into restore's and "
    "mirror's directories before their segments (tests/test_archive_dicts.py); a live log's "
    "dictionaries go through its file system (storage/dictionaries.py)",
    "archive/state.py": "write_whole/write_atomic/sync_dir for restore's and mirror's "
    "files; a live log's ARCHIVE.state goes through the Wal's file system",
}
MODULES = sorted(  # every library module and those of the cli package: "log/wal.py"
    p.relative_to(SRC).as_posix()
    for p in SRC.rglob("*.py")
    if p.relative_to(SRC).as_posix() not in SEAM | OUTSIDE_THE_LOG.keys()
    and p.relative_to(SRC).parts[0] not in {"testing", "bench"}
)

# os attributes that never touch a file (anywhere outside the seam).
OS_ALLOWED = {
    "getpid": "a process id, e.g. in a per-process temp name or the LOCK record",
    "environ": "the environment",
    "pathsep": "a constant",
    "sep": "a constant",
    "linesep": "a constant",
    "fspath": "converts a path-like to str without touching it",
    "fsdecode": "converts a bytes path to str without touching it",
    "register_at_fork": "a hook that marks open logs in a forked child; touches no file",
    "urandom": "random bytes from the kernel (log keys, salts, nonce prefixes); no file",
    "PathLike": "a type",
    "strerror": "formats an errno",
    "path": "the module; its functions are checked one by one below",
}
# os.path functions that only compute strings.
OS_PATH_ALLOWED = {
    "join",
    "dirname",
    "basename",
    "abspath",
    "normpath",
    "split",
    "splitext",
    "relpath",
    "isabs",
    "commonpath",
    "sep",
}
FORBIDDEN_MODULES = {"shutil", "mmap", "fcntl", "pathlib", "tempfile", "posix", "io", "builtins"}
IO_ALLOWED = {"BytesIO", "StringIO", "TextIOWrapper", "BufferedReader", "IOBase", "SEEK_SET"}
PATH_METHODS = {
    "read_bytes",
    "write_bytes",
    "read_text",
    "write_text",
    "touch",
    "rmdir",
    "iterdir",
    "symlink_to",
    "hardlink_to",
}  # (unlink, rename, replace, mkdir, open: also the seam's own method names)
# Exceptions for one module: (module, what) -> why it is not log data.
MODULE_ALLOWED = {
    ("cli/demo.py", "os.write"): "acknowledgement lines to the child's stdout pipe (one atomic "
    "write per line); the log itself is only used through segwal.open",
    ("cli/demo.py", "os.kill"): "SIGKILLs the child process",
    ("cli/demo.py", "tempfile.mkdtemp"): "a fresh directory for the demo's log",
    ("cli/demo.py", "tempfile.TemporaryFile"): "captures the child's stderr",
    ("cli/demo.py", "import tempfile"): "see tempfile.* above",
    ("log/encryption.py", "builtin open()"): "KeyFile reads the user's key-encryption key, "
    "a secret kept outside the log directory (never log data, never written)",
    ("log/config.py", "builtin open()"): "reads the compression dictionary a user names by "
    "path, a file outside the log directory (never log data, never written); the log's own "
    "copy is written through its file system",
    ("format/codecs.py", "import importlib"): "imports an optional codec library (zstd, lz4) "
    "by name; reads no log file",
    **{
        ("cli/migrate.py", what): "the destination of migrate/import must be absent or an "
        "empty directory, and one it made is removed after a failure; the logs themselves "
        "are only read and written through segwal.open"
        for what in (
            "import shutil",
            "os.path.exists",
            "os.path.isdir",
            "os.listdir",
            "shutil.rmtree",
            "os.unlink",
        )
    },
}
# Known violations, kept as strict xfails until they are fixed.
KNOWN: dict[str, str] = {}


@dataclass(frozen=True)
class Violation:
    module: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line}: {self.what}"


class Scanner(ast.NodeVisitor):
    """Finds file access that does not go through the seam in one module's source."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.aliases: dict[str, str] = {}  # local name -> dotted origin ("os", "os.path", ...)
        self.own: set[str] = set()  # module-level names that shadow builtins
        self.found: list[Violation] = []

    def scan(self, source: str) -> list[Violation]:
        tree = ast.parse(source, self.module)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                self.own.add(node.name)
            elif isinstance(node, ast.Assign):
                self.own.update(t.id for t in node.targets if isinstance(t, ast.Name))
        self.visit(tree)
        return self.found

    def _flag(self, node: ast.AST, what: str) -> None:
        if (self.module, what) not in MODULE_ALLOWED:
            self.found.append(Violation(self.module, getattr(node, "lineno", 0), what))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            top = alias.name.split(".")[0]
            self.aliases[alias.asname or top] = alias.name if alias.asname else top
            if top in FORBIDDEN_MODULES - {"io", "builtins"}:
                self._flag(node, f"import {alias.name}")
            if top == "importlib":
                self._flag(node, "import importlib")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        top = base.split(".")[0]
        for alias in node.names:
            name = alias.asname or alias.name
            self.aliases[name] = f"{base}.{alias.name}"
            if base == "segwal" and alias.name == "open":
                continue
            self._check_dotted(node, f"{base}.{alias.name}")
        if top in FORBIDDEN_MODULES - {"io", "os", "builtins"}:
            self._flag(node, f"from {base} import ...")

    def _dotted(self, node: ast.expr) -> str | None:
        """The dotted origin of ``a.b.c`` when ``a`` is an imported name."""
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name) or node.id not in self.aliases:
            return None
        return ".".join([self.aliases[node.id], *reversed(parts)])

    def _check_dotted(self, node: ast.AST, dotted: str) -> None:
        parts = dotted.split(".")
        top = parts[0]
        if top == "os":
            if len(parts) == 1:
                return
            if parts[1] == "path":
                if len(parts) > 2 and parts[2] not in OS_PATH_ALLOWED:
                    self._flag(node, dotted)
            elif parts[1] not in OS_ALLOWED:
                self._flag(node, dotted)
        elif top == "io":
            if len(parts) > 1 and parts[1] not in IO_ALLOWED:
                self._flag(node, dotted)
        elif top == "builtins":
            if len(parts) > 1 and parts[1] in ("open", "__import__"):
                self._flag(node, dotted)
        elif top in FORBIDDEN_MODULES and len(parts) > 1:
            self._flag(node, dotted)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        dotted = self._dotted(node)
        if dotted is not None:
            self._check_dotted(node, dotted)
            return  # the inner names are part of this one
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load) and node.id in self.aliases:
            dotted = self.aliases[node.id]
            if "." in dotted:  # from-imported functions, used bare
                self._check_dotted(node, dotted)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name):
            if func.id == "open" and "open" not in self.own and "open" not in self.aliases:
                self._flag(node, "builtin open()")
            elif func.id == "__import__":
                self._flag(node, "__import__()")
            elif func.id == "getattr" and node.args:
                target = node.args[0]
                origin = self._dotted(target) if isinstance(target, ast.Attribute) else None
                if isinstance(target, ast.Name) and target.id in self.aliases:
                    origin = self.aliases[target.id]
                if origin is not None and origin.split(".")[0] in FORBIDDEN_MODULES | {"os"}:
                    self._flag(node, f"getattr({origin}, ...)")
        elif (
            isinstance(func, ast.Attribute)
            and func.attr in PATH_METHODS
            and self._dotted(func) is None  # a method of some object: a pathlib.Path?
        ):
            self._flag(node, f".{func.attr}() (a pathlib-style file method)")
        self.generic_visit(node)


def scan_module(name: str) -> list[Violation]:
    return Scanner(name).scan((SRC / name).read_text())


def _module_params() -> Iterator[Any]:
    for name in MODULES:
        marks = []
        if name in KNOWN:
            marks.append(pytest.mark.xfail(strict=True, reason=KNOWN[name]))
        yield pytest.param(name, id=name, marks=marks)


def test_every_module_is_scanned() -> None:
    assert {"log/wal.py", "storage/segment.py", "storage/recovery.py", "log/opening.py"} <= set(
        MODULES
    )
    assert {"storage/repair.py", "storage/lockfile.py", "cli/demo.py"} <= set(MODULES)
    assert {"cli/__init__.py", "cli/common.py"} <= set(MODULES)
    assert not SEAM & set(MODULES)


@pytest.mark.parametrize("module", list(_module_params()))
def test_module_uses_only_the_seam(module: str) -> None:
    found = scan_module(module)
    assert not found, "file access outside the I/O seam:\n" + "\n".join(map(str, found))


def test_allowances_are_still_needed() -> None:
    """Every module-specific allowance matches something: stale ones are removed."""
    for (module, what), _reason in MODULE_ALLOWED.items():
        scanner = Scanner("<probe>")
        found = scanner.scan((SRC / module).read_text())
        assert any(v.what == what for v in found), f"{module}: {what} is no longer used"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("open('x')", "builtin open()"),
        ("import io\nio.open('x')", "io.open"),
        ("import builtins\nbuiltins.open('x')", "builtins.open"),
        ("import os\nos.pwrite(3, b'', 0)", "os.pwrite"),
        ("import os as o\no.fsync(3)", "os.fsync"),
        ("from os import fdatasync\nfdatasync(3)", "os.fdatasync"),
        ("from os import rename as mv\nmv('a', 'b')", "os.rename"),
        ("import os\nos.path.exists('x')", "os.path.exists"),
        ("import os\nf = os.unlink", "os.unlink"),
        ("import os\ngetattr(os, 'fsync')(3)", "getattr(os, ...)"),
        ("import shutil\nshutil.rmtree('x')", "import shutil"),
        ("import mmap", "import mmap"),
        ("from pathlib import Path\nPath('x').write_bytes(b'')", "from pathlib import ..."),
        ("p.write_bytes(b'')", ".write_bytes() (a pathlib-style file method)"),
        ("import os\nos.scandir('.')", "os.scandir"),
        ("import os\nos.listdir('.')", "os.listdir"),
        ("import os\nos.stat('.')", "os.stat"),
        ("__import__('os').unlink('x')", "__import__()"),
    ],
)
def test_scanner_catches(source: str, expected: str) -> None:
    found = Scanner("<probe>").scan(source)
    assert expected in [v.what for v in found], found


@pytest.mark.parametrize(
    "source",
    [
        "import os\nos.getpid()",
        "import os\nos.path.join('a', 'b')",
        "from os import PathLike, fspath",
        "def open(path):\n    return path\nopen('x')",
        "fs.rename('a', 'b')\nfs.unlink('a')\nhandle.sync('site')",
        "import io\nio.BytesIO()",
        "s.replace('a', 'b')",
    ],
)
def test_scanner_allows(source: str) -> None:
    assert Scanner("<probe>").scan(source) == []


# -- at run time ----------------------------------------------------------------------------

WRAPPED_OS = (
    "open",
    "write",
    "pwrite",
    "read",
    "pread",
    "fsync",
    "fdatasync",
    "rename",
    "replace",
    "unlink",
    "remove",
    "truncate",
    "ftruncate",
    "listdir",
    "scandir",
    "mkdir",
    "makedirs",
    "stat",
    "fstat",
    "lstat",
)
LIBRARY = str(SRC)
ALLOWED_CALLERS = {str(SRC / name) for name in SEAM}


def _wrap(
    name: str, real: Callable[..., Any], calls: list[tuple[str, str, int]]
) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        frame = sys._getframe(1)
        filename = frame.f_code.co_filename
        if filename.startswith(LIBRARY) and filename not in ALLOWED_CALLERS:
            calls.append((name, os.path.basename(filename), frame.f_lineno))
        return real(*args, **kwargs)

    return wrapper


@pytest.fixture
def watched(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, int]]:
    """Record every wrapped file call made directly by library code outside the seam."""
    calls: list[tuple[str, str, int]] = []
    for name in WRAPPED_OS:
        monkeypatch.setattr(os, name, _wrap(f"os.{name}", getattr(os, name), calls))
    monkeypatch.setattr(builtins, "open", _wrap("open", builtins.open, calls))
    monkeypatch.setattr(io, "open", _wrap("io.open", io.open, calls))
    return calls


def test_runtime_watch_sees_library_calls(watched: list[tuple[str, str, int]]) -> None:
    """The watch is not blind: a call from a file under src/segwal is recorded."""
    code = compile("import os\nos.stat('/')\n", str(SRC / "probe_not_a_module.py"), "exec")
    exec(code, {})
    assert watched == [("os.stat", "probe_not_a_module.py", 2)]


def test_workload_on_memory_never_reaches_the_os(watched: list[tuple[str, str, int]]) -> None:
    fs = MemoryFileSystem()
    clock = FakeClock()
    options: dict[str, Any] = {"filesystem": fs, "segment_bytes": 600, "clock": clock}
    wal = segwal.open("/data/wal", retention_max_bytes=4000, **options)
    lsn = 1
    for n in (1, 3, 1, 5, 2, 8, 1):
        wal.append_batch([payload(lsn + i) for i in range(n)])
        lsn += n
        clock.advance(0.01)
    wal.rotate()
    wal.hold("reader", wal.segments()[1].first_lsn)
    wal.truncate_before(wal.segments()[1].first_lsn)
    wal.append(payload(wal.next_lsn))
    wal.truncate_after(wal.last_lsn - 2)
    wal.release("reader")
    wal.apply_retention()
    assert [r.lsn for r in wal.replay()] == list(range(wal.first_lsn, wal.last_lsn + 1))
    wal.read(wal.last_lsn)
    wal.sync()
    reader = segwal.open("/data/wal", readonly=True, filesystem=fs)
    assert reader.last_lsn == wal.last_lsn
    reader.close()
    for mode in ("tolerate_tail", "truncate"):
        tail = wal.segments()[-1].path
        wal.close()
        handle = fs.open_write(tail)
        handle.pwrite(b"\xee" * 30, handle.size())  # a torn tail for recovery to cut
        handle.close()
        wal = segwal.open("/data/wal", recovery=mode, **options)  # type: ignore[arg-type]
        assert wal.recovery.cuts
        wal.append(b"after recovery")
    wal.close()
    report = segwal.verify("/data/wal", filesystem=fs)
    assert report is not None
    assert watched == [], f"library code called the OS directly: {watched}"
