"""The package's layers point down, and no import circle exists.

Every module of ``src/segwal`` is read as an AST; every import counts, at module level, under
``if TYPE_CHECKING:`` and inside functions alike. Each module belongs to a layer by its
folder (``../shared/DESIGN.md``), and a layer may import only the layers listed for it:

    base     errors, types, events              (the exception tree and public values)
    format   segwal/format/                     pure byte layouts, scanner, naming
    storage  segwal/storage/                    I/O seam, segments, recovery, repair, verify
    log      segwal/log/                        the Wal facade and its parts
    testing  segwal/testing/                    in-memory file system, crash imaging
    archive  segwal/archive/                    object store, uploader, restore, mirror;
                                                it uses the Wal's public methods only
    api      segwal/__init__.py                 the public API
    edge     segwal/cli/, segwal/bench/, ...    programs over the public API only

The checker is tested on small made-up trees first, so a pass means something.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import segwal

SRC = Path(segwal.__file__).resolve().parent

ALLOWED: dict[str, frozenset[str]] = {
    "base": frozenset({"base"}),
    "format": frozenset({"base", "format"}),
    "storage": frozenset({"base", "format", "storage"}),
    "log": frozenset({"base", "format", "storage", "log"}),
    "testing": frozenset({"base", "format", "storage", "testing"}),
    # format: to check the headers, seals and chain of downloaded segments.
    "archive": frozenset({"base", "format", "log", "archive"}),
    "api": frozenset({"base", "format", "storage", "log", "archive", "api"}),
    "edge": frozenset({"base", "api", "edge"}),  # base: errors, types, events are public
}
BASE_MODULES = {"segwal.errors", "segwal.types", "segwal.events"}
LOWER_PACKAGES = ("format", "storage", "log", "testing", "archive")


def layer_of(module: str) -> str:
    """The layer of a module of the package, from its dotted name."""
    if module == "segwal":
        return "api"
    if module in BASE_MODULES:
        return "base"
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LOWER_PACKAGES:
        return parts[1]
    return "edge"  # cli, bench, __main__, and the edge modules later issues add


def module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = [root.name, *rel.parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path) -> dict[str, Path]:
    return {module_name(root, p): p for p in sorted(root.rglob("*.py"))}


def imports(path: Path, known: set[str], own: str) -> Iterator[tuple[str, int]]:
    """Each package module ``path`` imports, with its line: every import statement counts."""
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "segwal":
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            if base.split(".")[0] != "segwal":
                continue
            for alias in node.names:
                # `from segwal.format import naming` imports the module segwal.format.naming.
                sub = f"{base}.{alias.name}"
                yield (sub if sub in known else base), node.lineno


def graph(root: Path) -> dict[str, dict[str, int]]:
    found = modules(root)
    known = set(found)
    return {
        name: {target: line for target, line in imports(path, known, name) if target != name}
        for name, path in found.items()
    }


def layer_violations(root: Path) -> list[str]:
    problems = []
    for name, targets in graph(root).items():
        layer = layer_of(name)
        for target, line in sorted(targets.items()):
            if layer_of(target) not in ALLOWED[layer]:
                problems.append(
                    f"{name} (layer {layer}) imports {target} (layer {layer_of(target)}) "
                    f"at line {line}"
                )
    return problems


def circles(root: Path) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), sorted."""
    edges = {name: sorted(targets) for name, targets in graph(root).items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, []):
            if nxt not in edges:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "segwal"
    for rel, text in {"__init__.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


# -- the checker, on made-up trees ------------------------------------------------------


def test_checker_sees_an_upward_import_under_type_checking(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "format/__init__.py": "",
            "format/layout.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from segwal.storage.fileio import FileSystem\n"
            ),
            "storage/__init__.py": "",
            "storage/fileio.py": "",
        },
    )
    assert layer_violations(root) == [
        "segwal.format.layout (layer format) imports segwal.storage.fileio (layer storage) "
        "at line 3"
    ]


def test_checker_sees_an_import_inside_a_function_and_a_relative_one(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "storage/__init__.py": "",
            "storage/segment.py": "def f():\n    from segwal.log import wal\n",
            "storage/index.py": "from ..log.wal import Wal\n",
            "log/__init__.py": "",
            "log/wal.py": "",
        },
    )
    assert [p.split(" at ")[0] for p in layer_violations(root)] == [
        "segwal.storage.index (layer storage) imports segwal.log.wal (layer log)",
        "segwal.storage.segment (layer storage) imports segwal.log.wal (layer log)",
    ]


def test_checker_keeps_the_core_off_testing_and_edges_off_internals(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "log/__init__.py": "",
            "log/wal.py": "import segwal.testing\n",
            "testing/__init__.py": "from segwal.errors import StorageError\n",
            "errors.py": "",
            "cli/__init__.py": (
                "from segwal import open\nfrom segwal.errors import SegwalError\n"
                "from segwal.log.wal import Wal\n"
            ),
        },
    )
    assert [p.split(" at ")[0] for p in layer_violations(root)] == [
        "segwal.cli (layer edge) imports segwal.log.wal (layer log)",
        "segwal.log.wal (layer log) imports segwal.testing (layer testing)",
    ]


def test_checker_finds_a_circle_through_type_checking(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "log/__init__.py": "",
            "log/cursors.py": "if False:\n    from segwal.log.wal import Wal\n",
            "log/wal.py": "from segwal.log import maintenance\n",
            "log/maintenance.py": "from segwal.log.cursors import Cursor\n",
            "log/retention.py": "from segwal.log.wal import Wal\n",
        },
    )
    assert circles(root) == [["segwal.log.cursors", "segwal.log.maintenance", "segwal.log.wal"]]


# -- the package itself --------------------------------------------------------------------


def test_the_layer_folders_exist() -> None:
    names = set(modules(SRC))
    for package in LOWER_PACKAGES:
        assert f"segwal.{package}" in names
    assert {layer_of(name) for name in names} == set(ALLOWED)


def test_lower_layers_never_import_higher_ones() -> None:
    assert layer_violations(SRC) == []


def test_no_import_circle() -> None:
    assert circles(SRC) == []


@pytest.mark.parametrize("path", sorted(p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py")))
def test_no_relative_imports(path: str) -> None:
    tree = ast.parse((SRC / path).read_text())
    relative = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]
    assert relative == [], f"{path}: relative imports at lines {relative}"
