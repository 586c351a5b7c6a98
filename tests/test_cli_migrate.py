"""``segwal migrate`` and ``segwal import``: new logs from old ones and from NDJSON, through
the CLI on real directories."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import segwal
from conftest import FakeClock
from helpers_logs import segment_files
from segwal.cli import main
from segwal.format.layout import decode_header


def run(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin, catch_exceptions=False)


def records_of(path: Path) -> list[tuple[int, int, int, bytes]]:
    with segwal.open(path, readonly=True) as wal:
        return [(r.lsn, r.type, r.timestamp_us, r.payload) for r in wal.replay()]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A log of 300 JSON-like records over several segments, checkpointed at LSN 51."""
    path = tmp_path / "src"
    clock = FakeClock()
    with segwal.open(path, segment_bytes=8192, sync="never", clock=clock) as wal:
        for i in range(30):
            clock.advance(0.001)
            batch = [b'{"i": %d, "j": %d, "body": "%s"}' % (i, j, b"xy" * 40) for j in range(10)]
            wal.append_batch(batch, type=i % 4)
        wal.truncate_before(51)
    return path


@pytest.mark.parametrize("compression", ["none", "zstd", "lz4"])
def test_migrate_keeps_every_record_and_compresses(
    tmp_path: Path, source: Path, compression: str
) -> None:
    target = tmp_path / "dst"
    result = run("migrate", str(source), str(target), "--compression", compression)
    assert result.exit_code == 0, result.output
    assert "verified" in result.output
    assert records_of(target) == records_of(source)
    assert records_of(target)[0][0] == 51
    versions = {decode_header(p.read_bytes()[:128]).version for p in segment_files(target)}
    assert versions == ({1} if compression == "none" else {2})
    if compression != "none":
        size = sum(p.stat().st_size for p in segment_files(target))
        assert size * 2 < sum(p.stat().st_size for p in segment_files(source))


def test_migrate_refuses_a_non_empty_target(tmp_path: Path, source: Path) -> None:
    target = tmp_path / "dst"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    result = run("migrate", str(source), str(target))
    assert result.exit_code == 2
    assert "not an empty directory" in result.output
    assert [p.name for p in target.iterdir()] == ["keep.txt"]


def test_import_inverts_dump_json(tmp_path: Path, source: Path) -> None:
    dumped = run("dump", str(source), "--json")
    assert dumped.exit_code == 0
    ndjson = tmp_path / "records.ndjson"
    ndjson.write_text(dumped.output)
    target = tmp_path / "imported"
    result = run("import", str(target), "--ndjson", str(ndjson), "--compression", "zstd")
    assert result.exit_code == 0, result.output
    assert records_of(target) == records_of(source)
    again = run("dump", str(target), "--json")
    assert again.output == dumped.output  # the round trip is exact, line for line


def test_import_from_stdin_into_an_empty_directory(tmp_path: Path) -> None:
    lines = [
        json.dumps(
            {
                "lsn": n,
                "type": 1,
                "timestamp_us": 10 + n,
                "payload": base64.b64encode(b"r%d" % n).decode(),
            }
        )
        for n in range(1, 6)
    ]
    target = tmp_path / "empty"
    target.mkdir()
    result = run("import", str(target), "--ndjson", "-", stdin="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    assert [r[3] for r in records_of(target)] == [b"r%d" % n for n in range(1, 6)]
    assert [r[2] for r in records_of(target)] == [11, 12, 13, 14, 15]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "line 2"),
        ('{"lsn": 2, "type": 0, "timestamp_us": 5}', "missing key 'payload'"),
        ('{"lsn": 2, "type": 0, "timestamp_us": 5, "payload": "!!"}', "line 2"),
        ('{"lsn": 7, "type": 0, "timestamp_us": 5, "payload": ""}', "does not follow"),
        ('{"lsn": 2, "type": true, "timestamp_us": 5, "payload": ""}', "type must be"),
    ],
)
def test_bad_ndjson_is_refused_and_leaves_no_log(tmp_path: Path, line: str, message: str) -> None:
    good = '{"lsn": 1, "type": 0, "timestamp_us": 5, "payload": "eA=="}'
    ndjson = tmp_path / "bad.ndjson"
    ndjson.write_text(good + "\n" + line + "\n")
    target = tmp_path / "dst"
    result = run("import", str(target), "--ndjson", str(ndjson))
    assert result.exit_code == 2
    assert message in result.output
    assert not target.exists()


def _single_appends(path: Path, n: int = 400) -> None:
    """Single appends, each with its own timestamp: one record per frame after migrate too."""
    clock = FakeClock()
    with segwal.open(path, sync="never", clock=clock) as wal:
        for i in range(n):
            clock.advance(0.001)
            wal.append(b'{"user": %d, "event": "click", "page": "/items/%d", "ok": true}' % (i, i))


def test_migrate_with_a_dictionary_names_it_and_stores_less(tmp_path: Path) -> None:
    source = tmp_path / "src"
    _single_appends(source)
    samples = [r[3] for r in records_of(source)]
    dictionary = tmp_path / "events.zdict"
    dictionary.write_bytes(segwal.train_dictionary(samples * 4, size=4096))
    plain, with_dict = tmp_path / "zstd", tmp_path / "dict"
    assert run("migrate", str(source), str(plain), "--compression", "zstd").exit_code == 0
    result = run(
        "migrate", str(source), str(with_dict), "--compression", "zstd",
        "--compression-dictionary", str(dictionary),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert records_of(with_dict) == records_of(source)
    headers = [decode_header(p.read_bytes()[:128]) for p in segment_files(with_dict)]
    assert {h.dict_id for h in headers} != {0}
    assert list(with_dict.glob("*.zdict"))  # stored in the new log, which reads alone
    size = sum(p.stat().st_size for p in segment_files(with_dict))
    assert size < sum(p.stat().st_size for p in segment_files(plain))


def test_migrate_refuses_a_dictionary_without_zstd_and_leaves_no_log(tmp_path: Path) -> None:
    source = tmp_path / "src"
    _single_appends(source, 20)
    dictionary = tmp_path / "d.zdict"
    dictionary.write_bytes(segwal.train_dictionary([r[3] for r in records_of(source)] * 20, 1024))
    target = tmp_path / "dst"
    result = CliRunner().invoke(
        main,
        ["migrate", str(source), str(target), "--compression-dictionary", str(dictionary)],
    )
    assert result.exit_code != 0
    assert 'compression="zstd"' in result.output
    assert not target.exists()
