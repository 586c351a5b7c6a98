"""The ``segwal`` command: info, verify, dump, truncate, prune, holds, demo; exit codes; the
public-API-only rule."""

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
from conftest import FakeClock, forget_clean_close
from segwal.cli import main, parse_duration, parse_size

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
    forget_clean_close(path)  # as a killed writer leaves it: some tests tear its tail
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
    assert f"decoder: {segwal.DECODER}" in result.stdout


@pytest.mark.parametrize(("pure", "expected"), [("1", "decoder: python, pure Python"), ("0", "")])
def test_version_names_the_decoder_a_fresh_process_chose(pure: str, expected: str) -> None:
    """SEGWAL_PURE_PYTHON=1 forces the pure decoder, and --version says so; without it the
    compiled one is named when it is built (it is, wherever the package was installed)."""
    env = {**os.environ, "SEGWAL_PURE_PYTHON": pure}
    env.pop("SEGWAL_PURE", None)
    result = subprocess.run(
        [sys.executable, "-m", "segwal", "--version"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.startswith(f"segwal {segwal.__version__} (decoder: ")
    if expected:
        assert expected in result.stdout
    else:
        from segwal.format import records

        name = "c, compiled" if records.decode_records_c is not None else "python, pure Python"
        assert name in result.stdout


# -- truncate, prune, holds --------------------------------------------------------------


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file of a directory with its content: what "changes nothing" compares."""
    return {f.name: f.read_bytes() for f in sorted(path.iterdir())}


def segment_infos(path: Path) -> list[segwal.SegmentInfo]:
    with segwal.open(path, readonly=True) as wal:
        return wal.segments()


def first_last(path: Path) -> tuple[int, int]:
    with segwal.open(path, readonly=True) as wal:
        return wal.first_lsn, wal.last_lsn


@pytest.fixture
def old_log(tmp_path: Path) -> Path:
    """8 sealed segments of 10 records and 3 in the active segment (LSNs 1..83), stamped a
    minute apart in November 2023, so any --max-age of days finds every segment old."""
    path = tmp_path / "old"
    clock = FakeClock()
    with segwal.open(path, sync="never", clock=clock) as wal:
        for lsn in range(1, 84):
            wal.append(payload(lsn))
            clock.advance(60)
            if lsn % 10 == 0 and lsn <= 80:
                wal.rotate()
    return path


def test_truncate_without_yes_shows_the_plan_and_changes_nothing(log_dir: Path) -> None:
    segments = segment_infos(log_dir)
    lsn = segments[2].first_lsn
    before = snapshot(log_dir)
    result = run("truncate", str(log_dir), "--before", str(lsn))
    assert result.exit_code == 2, result.output
    deleted = [line for line in result.stdout.splitlines() if line.strip().startswith("delete")]
    assert [line.split()[1] for line in deleted] == [Path(s.path).name for s in segments[:2]]
    assert f"the log would hold LSNs {lsn}..{RECORDS}" in result.stdout
    assert "needs --yes" in result.stderr
    assert f"--before {lsn} --yes" in result.stderr  # the command to run
    assert snapshot(log_dir) == before

    for args in (["--dry-run"], ["--dry-run", "--yes"], ["--dry-run", "--json"]):
        dry = run("truncate", str(log_dir), "--after", "3", *args)
        assert dry.exit_code == 0, dry.output
        assert snapshot(log_dir) == before
    data = json.loads(dry.stdout)
    assert data["dry_run"] is True and data["applied"] is False
    assert data["after"] == {"first_lsn": 1, "last_lsn": 3}
    assert [row["action"] for row in data["segments"]] == ["rewrite"] + ["delete"] * (
        len(segments) - 1
    )


def test_truncate_before_yes_json(log_dir: Path) -> None:
    segments = segment_infos(log_dir)
    lsn = segments[2].first_lsn + 1
    result = run("truncate", str(log_dir), "--before", str(lsn), "--yes", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["operation"] == "truncate_before" and data["lsn"] == lsn
    assert data["applied"] is True and data["dry_run"] is False
    assert data["before"] == {"first_lsn": 1, "last_lsn": RECORDS}
    assert data["after"] == {"first_lsn": lsn, "last_lsn": RECORDS}
    assert data["segments_deleted"] == 2
    assert data["bytes_reclaimed"] == segments[0].size_bytes + segments[1].size_bytes
    actions = [(row["file"], row["action"]) for row in data["segments"]]
    assert actions[:3] == [
        (Path(segments[0].path).name, "delete"),
        (Path(segments[1].path).name, "delete"),
        (Path(segments[2].path).name, "keep"),
    ]
    for row in data["segments"]:
        assert isinstance(row["first_lsn"], int) and isinstance(row["size_bytes"], int)
    assert not Path(segments[0].path).exists()
    assert first_last(log_dir) == (lsn, RECORDS)
    dumped = run("dump", str(log_dir), "--from", "1", "--json")
    assert json.loads(dumped.stdout.splitlines()[0])["lsn"] == lsn


def test_truncate_after_yes(log_dir: Path) -> None:
    result = run("truncate", str(log_dir), "--after", "42", "--yes")
    assert result.exit_code == 0, result.output
    assert "the log holds LSNs 1..42" in result.stdout
    with segwal.open(log_dir) as wal:
        assert wal.append(b"next") == 43
    assert segwal.verify(log_dir).ok


def test_truncate_that_changes_nothing_needs_no_yes(log_dir: Path) -> None:
    for args in (["--before", "1"], ["--after", str(RECORDS)]):
        result = run("truncate", str(log_dir), *args)
        assert result.exit_code == 0, result.output
        assert "would delete 0 segments" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "exactly one of --before LSN or --after LSN"),
        (["--before", "3", "--after", "5"], "exactly one"),
        (["--before", "-1"], "--before"),
        (["--before", "x"], "--before"),
        (["--before", str(RECORDS + 2)], f"the log holds LSNs 1..{RECORDS} (use 1..{RECORDS + 1})"),
        (["--after", str(RECORDS + 1)], f"(use 0..{RECORDS})"),
        (["--before", str(RECORDS + 2), "--yes"], f"(use 1..{RECORDS + 1})"),
        (["--after", str(RECORDS + 1), "--yes"], f"(use 0..{RECORDS})"),
    ],
)
def test_truncate_usage_errors_exit_2(log_dir: Path, args: list[str], message: str) -> None:
    before = snapshot(log_dir)
    result = run("truncate", str(log_dir), *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stdout == ""
    assert {k: v for k, v in snapshot(log_dir).items() if k != "LOCK"} == {
        k: v for k, v in before.items() if k != "LOCK"
    }


@pytest.mark.parametrize("command", ["truncate", "prune", "holds"])
def test_write_verbs_never_create_a_log(tmp_path: Path, command: str) -> None:
    args = {
        "truncate": ["--before", "1", "--yes"],
        "prune": ["--max-bytes", "1", "--yes"],
        "holds": ["--set", "x", "1"],
    }[command]
    missing = tmp_path / "nope"
    result = run(command, str(missing), *args)
    assert result.exit_code == 3, result.output
    assert "no such directory" in result.stderr
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run(command, str(empty), *args)
    assert result.exit_code == 2, result.output
    assert "holds no segwal log" in result.stderr
    assert os.listdir(empty) == []


def test_holds_list_set_release(log_dir: Path) -> None:
    listed = run("holds", str(log_dir), "--json")
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.stdout)
    assert data["holds"] == [] and data["action"] == "list" and data["changed"] is False
    assert (data["first_lsn"], data["last_lsn"]) == (1, RECORDS)
    assert run("holds", str(log_dir)).stdout.strip() == "no holds"

    # Setting a hold deletes nothing: no --yes needed.
    result = run("holds", str(log_dir), "--set", "backup", "50")
    assert result.exit_code == 0, result.output
    assert "hold 'backup' set at LSN 50" in result.stdout
    result = run("holds", str(log_dir), "--set", "replica:eu-1", "20", "--json")
    data = json.loads(result.stdout)
    assert data["action"] == "set" and data["changed"] is True and data["name"] == "replica:eu-1"
    assert data["holds"] == [{"name": "replica:eu-1", "lsn": 20}, {"name": "backup", "lsn": 50}]
    human = run("holds", str(log_dir)).stdout.splitlines()
    assert human[0].split() == ["NAME", "LSN"]
    assert [line.split() for line in human[1:]] == [["replica:eu-1", "20"], ["backup", "50"]]
    with segwal.open(log_dir, readonly=True) as wal:
        assert wal.holds() == {"backup": 50, "replica:eu-1": 20}

    # A hold refuses truncate --before past it, with or without --yes, and names itself.
    before = snapshot(log_dir)
    for extra in ([], ["--yes"], ["--dry-run"]):
        refused = run("truncate", str(log_dir), "--before", "30", *extra)
        assert refused.exit_code == 2, refused.output
        assert "hold 'replica:eu-1' keeps LSN 20" in refused.stderr
        assert "--release replica:eu-1" in refused.stderr
    assert {k: v for k, v in snapshot(log_dir).items() if k != "LOCK"} == {
        k: v for k, v in before.items() if k != "LOCK"
    }

    released = run("holds", str(log_dir), "--release", "replica:eu-1", "--json")
    assert released.exit_code == 0
    data = json.loads(released.stdout)
    assert data["changed"] is True and data["holds"] == [{"name": "backup", "lsn": 50}]
    again = run("holds", str(log_dir), "--release", "replica:eu-1")
    assert again.exit_code == 0
    assert "no hold named 'replica:eu-1'; nothing changed" in again.stderr
    assert run("truncate", str(log_dir), "--before", "30", "--yes").exit_code == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--set", "two words", "5"],
        ["--set", "", "5"],
        ["--set", "x" * 129, "5"],
        ["--set", "ok", "-1"],
        ["--set", "ok", "x"],
        ["--set", "ok", str(RECORDS + 2)],
        ["--set", "ok"],
        ["--release", "bad/name"],
        ["--set", "a", "1", "--release", "a"],
    ],
)
def test_holds_bad_input_exits_2_and_stores_nothing(log_dir: Path, args: list[str]) -> None:
    result = run("holds", str(log_dir), *args)
    assert result.exit_code == 2, result.output
    with segwal.open(log_dir, readonly=True) as wal:
        assert wal.holds() == {}


def test_holds_help_says_no_yes_needed() -> None:
    result = run("holds", "--help")
    assert "neither needs --yes" in " ".join(result.stdout.split())
    assert "no --yes needed" in run("--help").stdout


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("12h", 43200),
        ("7d", 604800),
        ("2w", 1209600),
        ("1.5h", 5400),
        ("30", 30),
        (" 7D ", 604800),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512KiB", 512 * 1024),
        ("10GiB", 10 * 2**30),
        ("1GB", 10**9),
        ("1gb", 10**9),
        ("1.5M", 3 * 2**19),
        ("4096", 4096),
        ("100B", 100),
        ("2TiB", 2 * 2**40),
        ("3kb", 3000),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "args",
    [
        ["--max-age", "7x"],
        ["--max-age", "0s"],
        ["--max-age", "-3d"],
        ["--max-age", "d"],
        ["--max-bytes", "10XB"],
        ["--max-bytes", "0"],
        ["--max-bytes", "1.5.5GB"],
        ["--min-segments", "-1", "--max-age", "1d"],
        [],  # no rule at all
        ["--min-segments", "3"],
    ],
)
def test_prune_usage_errors_exit_2(old_log: Path, args: list[str]) -> None:
    before = snapshot(old_log)
    result = run("prune", str(old_log), *args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert snapshot(old_log) == before


def test_prune_without_yes_or_with_dry_run_changes_nothing(old_log: Path) -> None:
    before = snapshot(old_log)
    result = run("prune", str(old_log), "--max-age", "7d", "--min-segments", "2")
    assert result.exit_code == 2, result.output
    assert "needs --yes" in result.stderr
    assert "--max-age 604800s --min-segments 2 --yes" in result.stderr
    assert "would delete 6 of 9 segments" in result.stdout
    assert snapshot(old_log) == before
    for args in (["--dry-run"], ["--dry-run", "--yes"], ["--dry-run", "--json"]):
        dry = run("prune", str(old_log), "--max-age", "7d", "--min-segments", "2", *args)
        assert dry.exit_code == 0, dry.output
        assert snapshot(old_log) == before
    data = json.loads(dry.stdout)
    assert data["applied"] is False and data["dry_run"] is True
    assert data["segments_to_delete"] == 6 and data["deleted"] == []
    assert data["segments_deleted"] == 0 and data["bytes_reclaimed"] == 0
    assert data["first_lsn_before"] == 1 and data["first_lsn"] == 61


def test_prune_yes_json_contract(old_log: Path) -> None:
    infos = segment_infos(old_log)
    result = run("prune", str(old_log), "--max-age", "7d", "--min-segments", "2", "--yes", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["applied"] is True and data["dry_run"] is False
    assert data["rules"] == {"max_age_seconds": 604800.0, "max_bytes": None, "min_segments": 2}
    plan = data["plan"]
    assert [row["file"] for row in plan] == [Path(s.path).name for s in infos]
    assert [row["delete"] for row in plan] == [True] * 6 + [False] * 3
    assert [row["rule"] for row in plan] == ["max_age"] * 8 + [None]
    assert [row["kept_by"] for row in plan][6:] == ["min_segments=2"] * 2 + ["active segment"]
    for row in plan:
        assert isinstance(row["first_lsn"], int) and isinstance(row["newest_record_us"], int)
        assert row["newest_record"].endswith("Z")
        assert datetime.fromisoformat(row["newest_record"]).utcoffset() is not None
    deleted = data["deleted"]
    assert [(d["first_lsn"], d["last_lsn"]) for d in deleted] == [
        (1 + 10 * k, 10 + 10 * k) for k in range(6)
    ]
    assert {d["rule"] for d in deleted} == {"max_age"}
    assert not any(d["deferred"] for d in deleted)
    assert data["segments_deleted"] == data["segments_to_delete"] == 6
    assert (
        data["bytes_reclaimed"] == data["bytes_to_reclaim"] == sum(s.size_bytes for s in infos[:6])
    )
    assert data["first_lsn"] == 61 and data["last_lsn"] == 83
    for segment in infos[:6]:
        assert not Path(segment.path).exists()
    assert first_last(old_log) == (61, 83)
    # Nothing more to delete: no --yes needed to find that out.
    again = run("prune", str(old_log), "--max-age", "7d", "--min-segments", "2")
    assert again.exit_code == 0 and "would delete 0 of 3 segments" in again.stdout


def test_prune_max_bytes_plan_matches_the_library(old_log: Path) -> None:
    infos = segment_infos(old_log)
    limit = sum(s.size_bytes for s in infos) - infos[0].size_bytes - infos[1].size_bytes - 1
    with segwal.open(old_log, retention_max_bytes=limit) as wal:
        expected = [
            (d.segment.first_lsn, d.delete, d.rule, d.kept_by) for d in wal.retention_plan()
        ]
    assert [d[1] for d in expected] == [True] * 3 + [False] * 6
    result = run("prune", str(old_log), "--max-bytes", str(limit), "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)["plan"]
    assert [(r["first_lsn"], r["delete"], r["rule"], r["kept_by"]) for r in plan] == expected
    applied = run("prune", str(old_log), "--max-bytes", f"{limit}B", "--yes", "--json")
    data = json.loads(applied.stdout)
    assert [d["first_lsn"] for d in data["deleted"]] == [1, 11, 21]
    assert {d["rule"] for d in data["deleted"]} == {"max_bytes"}
    assert sum(s.size_bytes for s in segment_infos(old_log)) <= limit


def test_prune_respects_holds_and_explains(old_log: Path) -> None:
    assert run("holds", str(old_log), "--set", "backup", "35").exit_code == 0
    result = run("prune", str(old_log), "--max-age", "90s", "--yes")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["ACTION", "FILE"]
    rows = {line.split()[1]: line for line in lines[1:-1]}
    assert rows["00000000000000000001.wal"].startswith("delete")
    assert rows["00000000000000000001.wal"].endswith("rule max_age")
    assert (
        "kept by hold 'backup' at LSN 35 (max_age would delete it)"
        in (rows["00000000000000000031.wal"])
    )
    assert rows["00000000000000000081.wal"].endswith("kept by active segment")
    assert lines[-1].startswith("deleted 3 of 9 segments")
    assert first_last(old_log) == (31, 83)


def test_prune_on_a_log_with_a_live_writer(old_log: Path) -> None:
    with segwal.open(old_log):
        dry = run("prune", str(old_log), "--max-age", "7d", "--dry-run", "--json")
        assert dry.exit_code == 0, dry.output
        assert json.loads(dry.stdout)["segments_to_delete"] == 8
        locked = run("prune", str(old_log), "--max-age", "7d", "--yes")
        assert locked.exit_code == 3
        assert "locked" in locked.stderr and "--dry-run" in locked.stderr
    assert len(segment_infos(old_log)) == 9


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

# The CLI's own modules may import each other: the packages segwal.cli and segwal.bench (the
# `segwal bench` suite, a client of the public API like the rest), their modules and the demo.
CLI_FILES = [
    "__main__.py",
    *sorted(f"{d}/{p.name}" for d in ("cli", "bench") for p in (SRC / d).glob("*.py")),
]


def is_cli_module(module: str) -> bool:
    # Also the edge modules, themselves over the public API (tests/test_layers.py).
    return module in {"segwal.cli", "segwal.bench", "segwal.aio", "segwal.metrics"} or (
        module.startswith(("segwal.cli.", "segwal.bench."))
    )


def imported_modules(path: Path) -> Iterator[tuple[str, list[str]]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            yield node.module or "", [alias.name for alias in node.names]


@pytest.mark.parametrize("name", CLI_FILES)
def test_cli_imports_only_the_public_api(name: str) -> None:
    seen = False
    for module, names in imported_modules(SRC / name):
        if module != "segwal" and not module.startswith("segwal."):
            continue
        seen = True
        if module == "segwal":
            assert set(names) <= set(segwal.__all__), f"{name}: from segwal import {names}"
        else:
            assert is_cli_module(module), f"{name} imports private module {module}"
    assert seen or name.startswith("bench/")  # a bench module may need no segwal at all


def test_tail_prints_the_newest_records_and_follows(tmp_path: Path) -> None:
    directory = str(tmp_path / "log")
    with segwal.open(directory, segment_bytes=2048) as wal:
        for i in range(50):
            wal.append(b"rec %d" % i)
    result = CliRunner().invoke(main, ["tail", directory, "-n", "3", "--json"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["lsn"] for line in result.output.splitlines()] == [48, 49, 50]
    child = subprocess.Popen(
        [sys.executable, "-m", "segwal", "tail", "-f", directory, "--from", "49", "--json"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert json.loads(child.stdout.readline())["lsn"] == 49
        assert json.loads(child.stdout.readline())["lsn"] == 50
        with segwal.open(directory) as wal:
            wal.append(b"new")
        assert json.loads(child.stdout.readline())["payload"] == base64.b64encode(b"new").decode()
    finally:
        child.kill()
        child.wait()
        assert child.stdout is not None
        child.stdout.close()


def test_dump_since_starts_at_the_first_record_at_or_after_a_time(tmp_path: Path) -> None:
    directory = str(tmp_path / "log")
    stamps = iter(range(1_000_000, 2_000_000, 1000))
    with segwal.open(directory, clock=lambda: next(stamps)) as wal:
        for i in range(20):
            wal.append(b"rec %d" % i)
        middle = wal.read(10).timestamp_us
    result = CliRunner().invoke(main, ["dump", directory, "--since", str(middle), "--json"])
    assert result.exit_code == 0, result.output
    lsns = [json.loads(line)["lsn"] for line in result.output.splitlines()]
    assert lsns == list(range(10, 21))
    bad = CliRunner().invoke(main, ["dump", directory, "--since", "yesterday-ish"])
    assert bad.exit_code == 2
