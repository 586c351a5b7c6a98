"""Full line and branch coverage of the on-disk format, the frame scanner and recovery
planning, measured in a child process so the suite proves it on every run.

The child runs only the test files below (not this one: no recursion) under
``coverage run --branch``, from the project root so it keeps the project's pytest
configuration (``addopts`` deselects ``-m slow``). A line or branch that no test reaches
fails here with its number; a ``pragma`` that excludes code from the count fails too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The smallest set that reaches every line and branch of the modules below.
TEST_FILES = (
    "tests/test_format.py",
    "tests/test_framing_lengths.py",
    "tests/test_scanner.py",
    "tests/test_recovery_branches.py",
    "tests/test_format_v2.py",  # version 2 headers and opaque frames
    "tests/test_encode.py",  # the one-record encoder's reference and its errors
    "tests/test_dictionaries.py",  # the header's dictionary id
    "tests/test_prealloc.py",  # the preallocated tail's zeros
    "tests/test_closed_tail.py",  # a clean close trusted at open, and every fallback
)
MODULES = (
    "src/segwal/format/layout.py",
    "src/segwal/format/framing.py",  # layout.py's records-frame encoding, split out
    "src/segwal/format/scanner.py",
    "src/segwal/storage/recovery.py",
    "src/segwal/storage/tailscan.py",
)
TIMEOUT = 240


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def _child_env() -> dict[str, str]:
    """The environment without what would change the child's run: extra pytest options
    or the coverage settings of an outer measured run."""
    return {
        k: v
        for k, v in os.environ.items()
        if k != "PYTEST_ADDOPTS" and not k.startswith("COVERAGE_")
    }


def _pct(covered: int, total: int) -> float:
    return 100.0 * covered / total if total else 100.0


def test_format_scanner_and_recovery_are_fully_covered(tmp_path: Path) -> None:
    assert Path(__file__).name not in {Path(f).name for f in TEST_FILES}
    for module in MODULES:
        assert "pragma:" not in (ROOT / module).read_text(), f"{module} excludes code"
    data = tmp_path / "coverage.data"
    report = tmp_path / "coverage.json"
    env = _child_env()
    started = time.monotonic()
    tests = _run(
        "coverage",
        "run",
        "--branch",
        f"--data-file={data}",
        "--source=segwal",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-x",
        *TEST_FILES,
        env=env,
    )
    elapsed = time.monotonic() - started
    assert tests.returncode == 0, (
        f"the covered tests failed (exit {tests.returncode}):\n"
        f"{tests.stdout[-6000:]}\n{tests.stderr[-3000:]}"
    )
    made = _run(
        "coverage",
        "json",
        f"--data-file={data}",
        "-o",
        str(report),
        "--include=" + ",".join(f"*/{m}" for m in MODULES),
        env=env,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    files = json.loads(report.read_text())["files"]

    lines = [f"coverage of {len(MODULES)} modules by {' '.join(TEST_FILES)} ({elapsed:.1f} s):"]
    gaps = []
    for module in MODULES:
        found = [f for f in files if f.replace(os.sep, "/").endswith(module)]
        assert len(found) == 1, f"{module} was not measured: {sorted(files)}"
        entry = files[found[0]]
        s = entry["summary"]
        line_pct = _pct(s["covered_lines"], s["num_statements"])
        branch_pct = _pct(s["covered_branches"], s["num_branches"])
        lines.append(
            f"  {module}: lines {line_pct:.2f}% ({s['covered_lines']}/{s['num_statements']}), "
            f"branches {branch_pct:.2f}% ({s['covered_branches']}/{s['num_branches']})"
        )
        missing_lines = entry["missing_lines"]
        missing_branches = [f"{a}->{b if b > 0 else 'exit'}" for a, b in entry["missing_branches"]]
        if missing_lines or missing_branches or entry["excluded_lines"]:
            gaps.append(
                f"  {module}: missing lines {missing_lines}, missing branches "
                f"{missing_branches}, excluded lines {entry['excluded_lines']}"
            )
    summary = "\n".join(lines + (["not covered:", *gaps] if gaps else []))
    print(summary)
    assert not gaps, summary
