"""``segwal stats``: a live log's numbers from another reader, once or refreshed."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from click.testing import CliRunner

import segwal
from segwal.cli import main


def test_stats_of_a_live_log_shows_what_its_writer_made_durable(wal_dir: str) -> None:
    with segwal.open(wal_dir, segment_bytes=4096) as wal:
        for i in range(60):
            wal.append(b"%d" % i * 40)
        result = CliRunner().invoke(main, ["stats", wal_dir, "--json"])
        assert result.exit_code == 0, result.output
        snap = json.loads(result.output)
        assert snap["durable_lsn"] == snap["last_lsn"] == 60
        assert snap["first_lsn"] == 1 and snap["records"] == 60
        assert snap["segments"] == len(wal.segments()) > 1
        assert snap["log_bytes"] == sum(s.size_bytes for s in wal.segments())
        text = CliRunner().invoke(main, ["stats", wal_dir])
        assert text.exit_code == 0
        assert "durable LSN   60" in text.output


def test_stats_watch_refreshes_and_gives_rates(wal_dir: str) -> None:
    with segwal.open(wal_dir) as wal:
        wal.append(b"first")
        stop = threading.Event()

        def writer() -> None:
            while not stop.wait(0.01):
                wal.append(b"more")

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            result = CliRunner().invoke(
                main, ["stats", wal_dir, "--watch", "--interval", "0.2", "--count", "3", "--json"]
            )
        finally:
            stop.set()
            thread.join()
    assert result.exit_code == 0, result.output
    snaps = [json.loads(line) for line in result.output.splitlines()]
    assert len(snaps) == 3
    assert snaps[0]["durable_records_per_second"] is None
    assert snaps[2]["durable_lsn"] > snaps[0]["durable_lsn"]
    assert snaps[2]["durable_records_per_second"] > 0


def test_stats_interval_is_bounded(wal_dir: str) -> None:
    segwal.open(wal_dir).close()
    result = CliRunner().invoke(main, ["stats", wal_dir, "--watch", "--interval", "0"])
    assert result.exit_code == 2
    missing = CliRunner().invoke(main, ["stats", wal_dir + "-nothing"])
    assert missing.exit_code == 3


def test_stats_shows_the_writers_counters_from_another_process(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with segwal.open(path, sync="never") as wal:
        wal.append_batch([b"x" * 10] * 5)
        wal.append(b"y" * 10)
        wal.sync()
        mine = wal.stats()
        with segwal.open(path, readonly=True) as ro:
            theirs = ro.stats()
        result = CliRunner().invoke(main, ["stats", str(path), "--json"])
    assert (theirs.appends, theirs.records, theirs.payload_bytes) == (2, 6, 60)
    assert theirs.fsyncs == mine.fsyncs and theirs.written_bytes == mine.written_bytes
    assert result.exit_code == 0, result.output
    writer = json.loads(result.stdout)["writer"]
    assert writer["appends"] == 2 and writer["records"] == 6 and writer["fsyncs"] == mine.fsyncs
    human = CliRunner().invoke(main, ["stats", str(path)]).stdout
    assert "2 appends, 6 records, 60 payload bytes" in human
