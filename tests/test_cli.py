"""The ``segwal`` command: info, verify, dump, demo; exit codes; the public-API-only rule."""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import segwal
from segwal.cli import main

SRC = Path(segwal.__file__).parent
VENV_BIN = Path(sys.executable).parent
RECORDS = 200
SEGMENT_BYTES = 4096


def payload(lsn: int) -> bytes:
    digest = hashlib.sha256(b"test-cli/%d" % lsn).digest()
    return digest * (1 + lsn % 4)


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """A closed log of RECORDS records over several 4 KiB segments, the last one unsealed."""
    path = tmp_path / "wal"
    with segwal.open(path, segment_bytes=SEGMENT_BYTES, sync="never") as wal:
        for lsn in range(1, RECORDS + 1):
            assert wal.append(payload(lsn), type=lsn % 3) == lsn
        segments = wal.segments()
    assert len(segments) >= 4
    assert not segments[-1].sealed and segments[-1].record_count > 0
    return path


def wal_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.wal"))


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


# -- info --------------------------------------------------------------------------------


def test_info_human(log_dir: Path) -> None:
    result = run("info", str(log_dir))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert re.search(r"first LSN\s+1$", out, re.M)
    assert re.search(rf"last LSN\s+{RECORDS}$", out, re.M)
    assert re.search(rf"durable LSN\s+{RECORDS}$", out, re.M)
    assert "torn tail would be cut: no" in out
    for file in wal_files(log_dir):
        assert file.name in out
    assert result.stderr == ""


def test_info_json_contract(log_dir: Path) -> None:
    result = run("info", str(log_dir), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["first_lsn"] == 1
    assert data["last_lsn"] == RECORDS
    assert data["durable_lsn"] == RECORDS
    assert data["records"] == RECORDS
    assert data["segment_count"] == len(wal_files(log_dir)) == len(data["segments"])
    lsn = 1
    for segment in data["segments"]:
        assert isinstance(segment["first_lsn"], int) and isinstance(segment["last_lsn"], int)
        assert segment["first_lsn"] == lsn
        lsn = segment["last_lsn"] + 1
        created = datetime.fromisoformat(segment["created"])
        assert created.utcoffset() is not None and segment["created"].endswith("Z")
        assert (log_dir / segment["file"]).stat().st_size == segment["size_bytes"]
    assert lsn == RECORDS + 1
    assert [s["sealed"] for s in data["segments"]][-2:] == [True, False]
    recovery = data["recovery"]
    assert recovery["cuts"] == [] and recovery["foreign_files"] == []
    assert recovery["torn_tail"] is False and recovery["torn_tail_would_be_cut"] is False
    assert recovery["bytes_to_cut"] == 0


def test_info_reads_a_log_locked_by_a_live_writer(log_dir: Path) -> None:
    with segwal.open(log_dir, segment_bytes=SEGMENT_BYTES) as wal:
        wal.append(b"written while locked")
        with pytest.raises(segwal.LockError):
            segwal.open(log_dir)
        result = run("info", str(log_dir), "--json")
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert data["last_lsn"] == data["durable_lsn"] == RECORDS + 1
        dumped = run("dump", str(log_dir), "--from", str(RECORDS + 1), "--json")
        assert dumped.exit_code == 0, dumped.output
        line = json.loads(dumped.stdout)
        assert base64.b64decode(line["payload"]) == b"written while locked"
    # Reading changed nothing: the writer's log reopens as it was.
    with segwal.open(log_dir, readonly=True) as wal:
        assert wal.last_lsn == RECORDS + 1


def test_info_of_an_empty_directory_warns(tmp_path: Path) -> None:
    result = run("info", str(tmp_path))
    assert result.exit_code == 0
    assert "no segment files" in result.stderr
    assert os.listdir(tmp_path) == []  # read-only: not even a LOCK file


# -- verify ------------------------------------------------------------------------------


def test_verify_clean(log_dir: Path) -> None:
    result = run("verify", str(log_dir))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    files = wal_files(log_dir)
    assert len(lines) == len(files) + 1
    for file, line in zip(files, lines, strict=False):
        assert line.startswith(file.name) and line.endswith("clean")
    assert lines[-1].startswith("verify: ok")
    assert f"{RECORDS} records" in lines[-1]

    data = json.loads(run("verify", str(log_dir), "--json").stdout)
    assert data["ok"] is True and data["problems"] == []
    assert data["records"] == RECORDS and data["last_lsn"] == RECORDS
    assert {s["status"] for s in data["segments"]} == {"clean"}


def test_verify_corrupt_sealed_segment_exits_1(log_dir: Path) -> None:
    first = wal_files(log_dir)[0]
    flip_byte(first, first.stat().st_size // 2)
    result = run("verify", str(log_dir))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith(first.name)
    assert re.search(r"first bad offset \d+: ", lines[0])
    assert all(line.endswith("clean") for line in lines[1:-1])
    assert lines[-1].startswith("verify: FAILED")
    assert "segwal: error: verification failed" in result.stderr
    assert "segwal dump" in result.stderr  # says what to try next

    failed = run("verify", str(log_dir), "--json")
    assert failed.exit_code == 1
    data = json.loads(failed.stdout)
    assert data["ok"] is False
    assert data["segments"][0]["status"] == "corrupt"
    assert isinstance(data["segments"][0]["bad_offset"], int)
    assert [p["kind"] for p in data["problems"]] == ["corruption"]

    # Reading through the damage fails loudly with exit 1, never skips it.
    dumped = run("dump", str(log_dir), "--json")
    assert dumped.exit_code == 1
    assert "corruption" in dumped.stderr and "segwal verify" in dumped.stderr


def test_corrupt_active_segment_fails_info(log_dir: Path) -> None:
    last = wal_files(log_dir)[-1]
    flip_byte(last, 80)  # in the first frame, with acknowledged frames after it
    result = run("info", str(log_dir))
    assert result.exit_code == 1
    assert "corruption" in result.stderr and "segwal verify" in result.stderr


def test_verify_torn_tail_is_a_warning(log_dir: Path) -> None:
    last = wal_files(log_dir)[-1]
    os.truncate(last, last.stat().st_size - 3)
    result = run("verify", str(log_dir))
    assert result.exit_code == 0, result.output
    assert "torn tail" in result.stdout.splitlines()[-2]
    assert "segwal: warning: torn tail" in result.stderr
    assert result.stdout.splitlines()[-1].startswith("verify: ok")

    info = run("info", str(log_dir))
    assert info.exit_code == 0
    assert "torn tail would be cut: yes" in info.stdout
    recovery = json.loads(run("info", str(log_dir), "--json").stdout)["recovery"]
    assert recovery["torn_tail_would_be_cut"] is True
    assert recovery["bytes_to_cut"] > 0
    assert recovery["cuts"][0]["file"] == last.name


# -- dump --------------------------------------------------------------------------------


def test_dump_json_round_trips(log_dir: Path) -> None:
    result = run("dump", str(log_dir), "--json")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == RECORDS
    for lsn, line in enumerate(lines, start=1):
        record = json.loads(line)
        assert record["lsn"] == lsn
        assert record["type"] == lsn % 3
        assert base64.b64decode(record["payload"], validate=True) == payload(lsn)
        moment = datetime.fromisoformat(record["timestamp"])
        assert round(moment.timestamp() * 1_000_000) == record["timestamp_us"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", record["timestamp"])


def test_dump_range_and_human_lines(log_dir: Path) -> None:
    result = run("dump", str(log_dir), "--from", "10", "--to", "20", "--json")
    assert [json.loads(line)["lsn"] for line in result.stdout.splitlines()] == list(range(10, 21))
    human = run("dump", str(log_dir), "--from", "195")
    assert human.exit_code == 0
    lines = human.stdout.splitlines()
    assert len(lines) == RECORDS - 194
    assert lines[0].split()[0] == "195"
    assert f"{len(payload(195))} B" in lines[0]


# -- usage, I/O errors, version ----------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["bogus"],
        ["info"],
        ["dump", "DIR", "--from", "x"],
        ["dump", "DIR", "--from", "0"],
        ["dump", "DIR", "--from", "9", "--to", "3"],
        ["demo", "--kills", "0"],
        ["verify", "DIR", "--no-such-option"],
    ],
)
def test_usage_errors_exit_2(log_dir: Path, args: list[str]) -> None:
    args = [str(log_dir) if a == "DIR" else a for a in args]
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""


@pytest.mark.parametrize("command", ["info", "verify", "dump"])
def test_missing_directory_exits_3(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "nope"
    result = run(command, str(missing))
    assert result.exit_code == 3
    assert f"{missing}: no such directory" in result.stderr
    assert "hint: check the path" in result.stderr
    assert result.stdout == ""
    assert not missing.exists()


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert segwal.__version__ in result.stdout


# -- demo --------------------------------------------------------------------------------


def summary_numbers(out: str) -> dict[str, int]:
    numbers = {}
    for key in ("records acknowledged", "records recovered", "lost acknowledged", "kills"):
        match = re.search(rf"^\s+{key}[^\d]*\s(\d+)", out, re.M)
        assert match, f"no {key!r} in the summary:\n{out}"
        numbers[key] = int(match.group(1))
    return numbers


def test_demo_subprocess_then_verify(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "segwal", "demo", str(directory), "--kills", "2", "--seed", "7"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    numbers = summary_numbers(result.stdout)
    assert numbers["kills"] == 2
    assert numbers["lost acknowledged"] == 0
    assert numbers["records acknowledged"] > 0
    assert numbers["records recovered"] >= numbers["records acknowledged"]
    assert re.search(r"^\s+verify\s+clean$", result.stdout, re.M)
    assert "result: OK" in result.stdout
    assert len(wal_files(directory)) >= 3  # the small segments rotated

    # The installed console script reads what the demo left.
    script = VENV_BIN / "segwal"
    verified = subprocess.run(
        [str(script), "verify", str(directory), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr
    report = json.loads(verified.stdout)
    assert report["ok"] is True
    assert report["records"] == numbers["records recovered"]


def test_demo_in_a_fresh_temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = run("demo", "--seed", "3")
    assert result.exit_code == 0, result.output
    match = re.search(r"^log directory: (.+)$", result.stdout, re.M)
    assert match
    directory = Path(match.group(1))
    assert directory.parent == tmp_path
    assert summary_numbers(result.stdout)["lost acknowledged"] == 0
    assert segwal.verify(directory).ok


def test_demo_on_a_locked_log_exits_3(log_dir: Path) -> None:
    with segwal.open(log_dir, segment_bytes=SEGMENT_BYTES):
        result = run("demo", str(log_dir))
    assert result.exit_code == 3
    assert "segwal: error:" in result.stderr and "locked" in result.stderr


# -- the public-API-only rule ------------------------------------------------------------

CLI_MODULES = {"segwal.cli", "segwal.demo"}  # the CLI's own modules may import each other


def imported_modules(path: Path) -> Iterator[tuple[str, list[str]]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            yield node.module or "", [alias.name for alias in node.names]


@pytest.mark.parametrize("name", ["cli.py", "demo.py", "__main__.py"])
def test_cli_imports_only_the_public_api(name: str) -> None:
    seen = False
    for module, names in imported_modules(SRC / name):
        if module != "segwal" and not module.startswith("segwal."):
            continue
        seen = True
        if module == "segwal":
            assert set(names) <= set(segwal.__all__), f"{name}: from segwal import {names}"
        else:
            assert module in CLI_MODULES, f"{name} imports private module {module}"
    assert seen
