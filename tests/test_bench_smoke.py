"""Smoke test of benchmarks/bench_core.py: it runs and prints a table. Speed is never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_core.py"
WORKLOADS = ("batch-100B", "durable-100B", "replay-100B")


def table_rows(stdout: str) -> list[list[str]]:
    rows = []
    for line in stdout.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


@pytest.mark.timeout(180)
def test_quick_run_prints_a_table_for_segwal_and_sqlite(tmp_path: Path) -> None:
    out_json = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--repeat",
            "1",
            "--only",
            "^(" + "|".join(WORKLOADS) + ")$",
            "--dir",
            str(tmp_path / "data"),
            "--json",
            str(out_json),
        ],
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    directory = [line for line in proc.stdout.splitlines() if line.startswith("- directory:")]
    assert directory and " on " in directory[0]  # the file system is named

    rows = table_rows(proc.stdout)
    assert rows, proc.stdout
    header, body = rows[0], rows[1:]
    assert header[:2] == ["workload", "contender"]
    seen = {(row[0], row[1]) for row in body}
    for workload in WORKLOADS:
        for contender in ("segwal", "sqlite3", "raw"):
            assert (workload, contender) in seen, proc.stdout
    for row in body:
        assert row[0] in WORKLOADS  # --only filtered the rest out
        assert row[2] and row[3]  # records/s and MB/s are filled in

    doc = json.loads(out_json.read_text())
    assert {r["contender"] for r in doc["results"]} >= {"segwal", "sqlite3"}
    assert all(r["median_rps"] > 0 for r in doc["results"])
    assert doc["machine"]["filesystem"]["fstype"]


def test_list_names_every_workload() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    names = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    assert {"batch-100B", "single-1KiB", "durable-100B", "group-8t", "replay-1KiB"} <= names
