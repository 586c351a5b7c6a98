"""Running a script under valgrind memcheck, for the tests of the C extensions.

CPython itself is not memcheck-clean (uninitialised-value reports inside the interpreter),
so a run passes when memcheck reports no invalid read or write at all and no error in a
stack through one of ``ours`` (the extension modules' names)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DONE = "memcheck-script-done"  # the last line a script prints


def run_memcheck(tmp_path: Path, script: str, ours: tuple[str, ...], timeout: float) -> None:
    """Run ``script`` (which prints ``DONE`` last) under memcheck and check the report;
    skipped without valgrind, a failure under CI=true (.ci/run installs it)."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail("valgrind is not installed, and CI=true needs it")
        pytest.skip("valgrind is not installed")
    path = tmp_path / "memcheck_script.py"
    path.write_text(script)
    log = tmp_path / "memcheck.log"
    env = dict(os.environ, PYTHONMALLOC="malloc", SEGWAL_PURE="0")
    proc = subprocess.run(
        [
            valgrind,
            "--tool=memcheck",
            "--leak-check=no",
            f"--log-file={log}",
            sys.executable,
            str(path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    report = log.read_text()
    assert proc.returncode == 0 and DONE in proc.stdout, proc.stderr + report
    assert "ERROR SUMMARY" in report, report
    assert "Invalid read" not in report and "Invalid write" not in report, report
    for name in ours:
        assert name not in report, report
