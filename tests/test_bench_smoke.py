"""Smoke test of the benchmark suite (``segwal bench``, ``python -m segwal.bench``).

It runs, writes a report with one table per workload group and segwal's ratios, a JSON
document with every contender and a PNG plot. Speed is never asserted.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from segwal.bench.dictrows import ROWS

# A buffered row (where lmdb and rocksdict run), a durable row, a group-commit row, a read
# row and the open-1000 row. No cold replay: it drops the page cache of the whole machine.
WORKLOADS = ("batch-1KiB", "durable-100B", "group-4t", "read-100B", "open-1000seg-rw")
OPTIONAL = ("lmdb", "rocksdict")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def bench(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "segwal.bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def table(report: str, title: str) -> list[list[str]]:
    """The rows (header first) of the first table after the ``## title`` heading."""
    section = report.split(f"## {title}\n", 1)[1]
    rows = []
    for line in section.splitlines():
        if line.startswith("## "):
            break
        if line.startswith("|---"):
            continue
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    return rows


@pytest.mark.timeout(180)
def test_quick_run_writes_report_json_and_plot(tmp_path: Path) -> None:
    out, plot, doc_path = tmp_path / "B.md", tmp_path / "p.png", tmp_path / "b.json"
    data = tmp_path / "data"
    proc = bench(
        "--quick",
        "--repeat",
        "1",
        "--only",
        "^(" + "|".join(WORKLOADS) + ")$",
        "--dir",
        str(data),
        "--out",
        str(out),
        "--plot",
        str(plot),
        "--json",
        str(doc_path),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    expected = {"segwal", "sqlite3", "raw"} | {m for m in OPTIONAL if installed(m)}
    for module in set(OPTIONAL) - expected:  # a missing peer is skipped with a note
        assert f"{module} skipped" in proc.stderr and "pip install 'segwal[bench]'" in proc.stderr

    report = out.read_text()
    assert report in proc.stdout  # printed as well as written
    assert re.search(r"^- directory: .+ on \S+", report, re.MULTILINE)  # the file system
    assert re.search(r"^- load average: .+ before, .+ after", report, re.MULTILINE)
    assert "- cold cache: " in report and "- software: " in report

    contenders = ["segwal", "sqlite3", "lmdb", "rocksdict", "raw"]
    contenders = [c for c in contenders if c in expected]
    peers = [c for c in contenders if c != "segwal"]
    for title, workload in (
        ("Buffered append", "batch-1KiB"),
        ("Durable append, one thread", "durable-100B"),
        ("Group commit: durable appends from N threads", "group-4t"),
        ("Random read by key / LSN", "read-100B"),
    ):
        header, *body = table(report, title)
        assert header == ["workload", *contenders, *(f"segwal / {p}" for p in peers), "notes"]
        assert [row[0] for row in body] == [f"`{workload}`"]
        row = dict(zip(header, body[0], strict=True))
        for c in contenders:
            assert re.match(r"[\d.]+[kM]?/s", row[c]), row
        for p in peers:  # the ratio of segwal to each peer and to the raw baseline
            assert re.fullmatch(r"\d+\.\d\dx", row[f"segwal / {p}"]), row
    # A table shows only the contenders that ran one of its workloads.
    header, *body = table(report, "Opening a log of 1,000 sealed segments")
    assert header == ["workload", "segwal", "notes"]
    row = dict(zip(header, body[0], strict=True))
    assert re.fullmatch(r"[\d.]+ ms", row["segwal"])
    assert "## Details" in report
    goals = table(report, "Against the speed goals (issue 15)")
    assert goals[0][:3] == ["goal", "paired ratio of", "target"]
    durable = [cells for cells in goals[1:] if cells[0] == "durable append, one thread vs raw"]
    assert len(durable) == 1 and re.fullmatch(r"\d+\.\d\dx", durable[0][3]), goals
    assert durable[0][4] in ("yes", "**no**")

    doc = json.loads(doc_path.read_text())
    assert set(doc["contenders"]) == expected | {"segwal+buffer"}  # it runs single rows only
    seen = {(r["workload"], r["contender"]) for r in doc["results"]}
    for workload in WORKLOADS[:-1]:
        assert {(workload, c) for c in expected} <= seen
    assert ("open-1000seg-rw", "segwal") in seen
    assert all(r["median_rps"] > 0 for r in doc["results"])
    assert doc["machine"]["filesystem"]["fstype"] and doc["machine"]["versions"]["segwal"]
    assert {r["workload"] for r in doc["results"]} == set(WORKLOADS)  # --only filtered

    if installed("matplotlib"):
        assert plot.read_bytes()[:8] == PNG_SIGNATURE
        assert "![durable throughput against threads](p.png)" in report
    else:
        assert not plot.exists() and "pip install 'segwal[bench]'" in report
    assert data.is_dir() and not list(data.iterdir())  # the run's files were removed


def test_list_names_every_workload() -> None:
    proc = bench("--list", timeout=60)
    assert proc.returncode == 0, proc.stderr
    names = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    assert {
        "batch-64KiB",
        "single-100B",
        "durable-100B",
        "group-64t",
        "replay-1KiB-cold",
        "read-100B",
        "read-100B-ro",
        "read-100B-200seg",
        "read-100B-4000seg",
        "open-1000seg-ro",
    } <= names


def test_only_matching_nothing_is_a_usage_error(tmp_path: Path) -> None:
    proc = bench("--only", "no-such-workload", "--out", str(tmp_path / "B.md"), timeout=60)
    assert proc.returncode == 2
    assert "matches no workload" in proc.stderr
    assert not (tmp_path / "B.md").exists()


def test_importing_the_suite_needs_no_optional_package() -> None:
    code = (
        "import sys, segwal.bench, segwal.bench.__main__\n"
        "heavy = {'lmdb', 'rocksdict', 'matplotlib', 'rich'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_missing_optional_packages_are_skipped_with_a_note(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "for name in ('lmdb', 'rocksdict', 'matplotlib'):\n"
        "    sys.modules[name] = None  # import raises ImportError\n"
        "from segwal.bench.command import bench\n"
        "bench(sys.argv[1:], prog_name='segwal bench')\n"
    )
    out, plot, doc_path = tmp_path / "B.md", tmp_path / "p.png", tmp_path / "b.json"
    args = ["--quick", "--repeat", "1", "--only", "^group-1t$", "--dir", str(tmp_path)]
    args += ["--out", str(out), "--plot", str(plot), "--json", str(doc_path)]
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    notes = [line for line in proc.stderr.splitlines() if "pip install 'segwal[bench]'" in line]
    assert len(notes) == 3, proc.stderr  # lmdb, rocksdict, the plot: one line each
    contenders = json.loads(doc_path.read_text())["contenders"]
    assert contenders == ["segwal", "segwal+buffer", "sqlite3", "raw"]
    assert not plot.exists()
    report = out.read_text()
    assert "lmdb skipped" in report and "no plot: matplotlib is not installed" in report


def test_codec_rows(tmp_path: Path) -> None:
    """``segwal bench --codecs``: a row per codec (encrypted ones too) x record kind x size,
    with the ratio."""
    out = tmp_path / "codecs.md"
    done = bench("--codecs", "--quick", "--repeat", "1", "--out", str(out), "--dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    batches, single = out.read_text().split("\n## Single small appends", 1)
    rows = [line.split("|")[1:-1] for line in batches.splitlines() if line.startswith("| ")]
    body = [[cell.strip() for cell in row] for row in rows[1:]]
    assert len(body) == 28
    _check_dictionary_rows(single)
    ratio = {(r[0], r[1], r[2]): float(r[7]) for r in body}
    cpu = {(r[0], r[1], r[2]): float(r[8].rstrip("x")) for r in body}
    assert all(cpu[row] == 1.0 for row in cpu if row[0] == "none")
    assert all(value > 0 for value in cpu.values())
    assert ratio[("zstd", "jsonish", "1024 B")] > 2 * ratio[("none", "jsonish", "1024 B")]
    assert ratio[("lz4", "random", "1024 B")] == ratio[("none", "random", "1024 B")]
    # Encrypted frames carry a plain size, a nonce and a tag: a little bigger than plain.
    assert ratio[("aes-gcm", "random", "100 B")] <= ratio[("none", "random", "100 B")]  # 2 decimals
    both = ratio[("zstd+aes-gcm", "jsonish", "1024 B")]
    assert ratio[("zstd", "jsonish", "1024 B")] > both > 2 * ratio[("none", "jsonish", "1024 B")]
    assert {r[0] for r in body} == {
        *("none", "zstd", "lz4", "aes-gcm", "zstd+aes-gcm"),
        *("zstd pipelined", "lz4 pipelined"),
    }
    # Compressed off the appending thread, the same frames reach the disk.
    for codec in ("zstd", "lz4"):
        for kind in ("jsonish", "random"):
            for size in ("100 B", "1024 B"):
                row = (codec, kind, size)
                assert ratio[(f"{codec} pipelined", kind, size)] == ratio[row], row


def _check_dictionary_rows(text: str) -> None:
    """The single-append rows (bench/dictrows.py): plain, zstd and zstd with a trained
    dictionary at 100 B, 256 B and 1 KiB; the dictionary stores single small records
    smaller, where zstd alone cannot."""
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| ")]
    body = [[cell.strip() for cell in row] for row in rows[1:]]
    assert [(r[0], r[1]) for r in body] == [
        (codec, size) for size in ("100 B", "256 B", "1024 B") for codec in ROWS
    ]
    ratio = {(r[0], r[1]): float(r[6]) for r in body}
    for size in ("100 B", "256 B", "1024 B"):
        assert ratio[("zstd+dict", size)] > 1.3 * ratio[("zstd", size)], ratio
    assert ratio[("zstd", "100 B")] == ratio[("none", "100 B")]  # too small to compress alone


@pytest.mark.timeout(180)
@pytest.mark.parametrize("trick", ["prealloc", "direct"])
def test_the_trick_rows_pair_segwal_with_the_raw_loop_using_the_same_trick(
    tmp_path: Path, trick: str
) -> None:
    """durable-100B-prealloc (preallocate=True against raw overwrites of fallocated space)
    and durable-100B-direct (direct_io=True against raw O_DIRECT block writes): segwal and
    raw only (each row compares like with like)."""
    doc_path = tmp_path / "b.json"
    proc = bench(
        "--quick",
        "--only",
        f"^durable-100B-{trick}$",
        "--dir",
        str(tmp_path),
        "--out",
        str(tmp_path / "B.md"),
        "--plot",
        str(tmp_path / "p.png"),
        "--json",
        str(doc_path),
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(doc_path.read_text())["results"]
    got = {r["contender"]: r for r in rows if r["workload"] == f"durable-100B-{trick}"}
    assert set(got) == {"segwal", "raw"}
    assert got["raw"]["segwal_ratio"] is not None and got["raw"]["segwal_ratio"] > 0
    assert got["segwal"]["median_syncs"] > 0 and got["raw"]["median_syncs"] > 0


@pytest.mark.parametrize("direct", [False, True])
def test_the_raw_prealloc_writer_leaves_the_records_then_zeros(
    tmp_path: Path, direct: bool
) -> None:
    from segwal.bench.raw import FILE, PREALLOC_STEP, RawPreallocWriter

    writer = RawPreallocWriter(str(tmp_path), direct=direct)
    payloads = [bytes([i]) * 100 for i in range(50)]
    for p in payloads:
        writer.append(p)
    writer.close()
    raw = (tmp_path / FILE).read_bytes()
    assert len(raw) == PREALLOC_STEP
    end = 50 * 104
    assert raw[end:] == bytes(len(raw) - end)
    assert raw[4:104] == payloads[0] and raw[end - 100 : end] == payloads[-1]
