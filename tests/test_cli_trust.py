"""The CLI's side of issue 13: exit codes that tell the truth, and a demo that never writes
into a directory it did not make."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import segwal
from helpers_logs import build_log, patch_header, segment_files
from segwal.cli import EXIT_CORRUPT, EXIT_OK, EXIT_PIPE, EXIT_USAGE, main


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


# -- finding 9: the demo refuses a directory that holds anything -----------------------------


def test_demo_refuses_an_existing_log(tmp_path: Path) -> None:
    log = tmp_path / "log"
    build_log(log, records=10)
    before = {p.name: p.read_bytes() for p in log.iterdir()}
    result = run("demo", str(log))
    assert result.exit_code == EXIT_USAGE, result.output
    assert "is not empty" in result.output
    assert {p.name: p.read_bytes() for p in log.iterdir()} == before


def test_demo_refuses_any_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = run("demo", str(tmp_path))
    assert result.exit_code == EXIT_USAGE
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


# -- finding 14: exit codes -------------------------------------------------------------------


def _closed_stdout(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI with a stdout pipe whose reader is gone before anything is written:
    `segwal verify DIR | head -1` at its most deterministic."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", "segwal", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)


def test_verify_into_a_closed_pipe_exits_with_its_verdict(tmp_path: Path) -> None:
    log = tmp_path / "log"
    build_log(log)
    done = _closed_stdout("verify", str(log))
    assert done.returncode == EXIT_OK, done.stderr
    assert b"Traceback" not in done.stderr
    segment_files(log)[2].write_bytes(b"\x00" * 300)
    assert _closed_stdout("verify", str(log)).returncode == EXIT_CORRUPT


def test_dump_into_a_closed_pipe_exits_quietly_with_141(tmp_path: Path) -> None:
    log = tmp_path / "log"
    build_log(log)
    done = _closed_stdout("dump", str(log))
    assert done.returncode == EXIT_PIPE, done.stderr
    assert b"Traceback" not in done.stderr and b"error" not in done.stderr


@pytest.mark.parametrize("as_json", [False, True])
def test_a_newer_format_version_is_not_corruption(tmp_path: Path, as_json: bool) -> None:
    log = tmp_path / "log"
    build_log(log)
    patch_header(segment_files(log)[-1], version=3)
    report = segwal.verify(log)
    assert not report.ok
    assert [p.kind for p in report.problems] == ["unsupported"]
    result = run("verify", str(log), *(["--json"] if as_json else []))
    assert result.exit_code == EXIT_USAGE, result.output
    if as_json:
        data = json.loads(result.stdout)
        assert data["problems"][0]["kind"] == "unsupported"
        assert data["segments"][-1]["status"] == "unsupported"
    else:
        assert "needs a newer segwal" in result.output
        assert "verify: INCOMPLETE, 1 of 8 segments need a newer segwal" in result.stdout
        assert "corrupt" not in result.stdout


def test_opening_a_newer_format_version_exits_2(tmp_path: Path) -> None:
    log = tmp_path / "log"
    build_log(log)
    patch_header(segment_files(log)[-1], version=3)
    assert run("info", str(log)).exit_code == EXIT_USAGE
