"""``segwal stats``: the counters of a log, live beside its writer in another process.

A readonly open computes what the directory says (segments, bytes, first and last LSN) and
reads what the writer publishes in its ``LOCK`` file: the durable LSN and the writer's
counters since it opened the log (appends, records, bytes, fsyncs), as of its last durable
advance; ``--watch`` refreshes the same open every ``--interval`` seconds (a directory
listing, a ``LOCK`` read and a scan of the new frames of the active segment) and adds rates.
The fsync durations live in the writer's process: export them with ``segwal.metrics``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import click

import segwal
from segwal.cli.common import emit_json, errors, lsn_range, rfc3339


def _snapshot(wal: segwal.Wal) -> dict[str, Any]:
    stats = wal.stats()
    segments = wal.segments()
    oldest = next((s.min_timestamp_us for s in segments if s.min_timestamp_us), 0)
    newest = max((s.max_timestamp_us for s in segments), default=0)
    return {
        "path": os.path.abspath(wal.path),
        "time": rfc3339(time.time_ns() // 1000),
        "first_lsn": stats.first_lsn,
        "last_lsn": stats.last_lsn,
        "durable_lsn": stats.durable_lsn,
        "records": max(0, stats.last_lsn - stats.first_lsn + 1),
        "segments": stats.segments,
        "sealed_segments": sum(s.sealed for s in segments),
        "log_bytes": stats.log_bytes,
        "writer": {
            "appends": stats.appends,
            "records": stats.records,
            "payload_bytes": stats.payload_bytes,
            "written_bytes": stats.written_bytes,
            "fsyncs": stats.fsyncs,
            "dir_fsyncs": stats.dir_fsyncs,
        },
        "oldest_record": rfc3339(oldest) if oldest else None,
        "newest_record": rfc3339(newest) if newest else None,
    }


def _rates(now: dict[str, Any], before: dict[str, Any] | None, seconds: float) -> None:
    if before is None or seconds <= 0:
        now["durable_records_per_second"] = None
        now["bytes_per_second"] = None
        return
    now["durable_records_per_second"] = round(
        (now["durable_lsn"] - before["durable_lsn"]) / seconds, 1
    )
    now["bytes_per_second"] = round((now["log_bytes"] - before["log_bytes"]) / seconds, 1)


def _show(snap: dict[str, Any], watch: bool) -> None:
    lines = [
        f"log           {snap['path']}",
        f"LSNs          {lsn_range(snap['first_lsn'], snap['last_lsn'])} "
        f"({snap['records']} records)",
        f"durable LSN   {snap['durable_lsn']}",
        f"segments      {snap['segments']} ({snap['sealed_segments']} sealed), "
        f"{snap['log_bytes']} bytes",
        f"records       {snap['oldest_record'] or '-'} .. {snap['newest_record'] or '-'}",
        "writer        {appends} appends, {records} records, {payload_bytes} payload bytes, "
        "{fsyncs} fsyncs (since it opened the log)".format(**snap["writer"]),
    ]
    if watch:
        rate, speed = snap["durable_records_per_second"], snap["bytes_per_second"]
        lines.append(
            "rate          "
            + ("-" if rate is None else f"{rate:g} durable records/s, {speed:g} bytes/s")
        )
        lines.append(f"at            {snap['time']}")
    click.echo("\n".join(lines))


@click.command(short_help="Show a log's counters; --watch refreshes them in place.")
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.option("-w", "--watch", is_flag=True, help="Refresh every --interval seconds.")
@click.option(
    "--interval",
    type=click.FloatRange(0.1, 3600.0),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes with --watch (0.1 to 3600).",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=None,
    help="With --watch: stop after this many refreshes (default: until Ctrl-C).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object (NDJSON with --watch).")
def stats(directory: str, watch: bool, interval: float, count: int | None, as_json: bool) -> None:
    """Show a log's LSNs, durable LSN, segments and bytes, read-only.

    Works beside a live writer in another process: the durable LSN is the one that writer
    published. With --watch the numbers refresh in place (a new block per refresh when
    stdout is not a terminal) with the rate of durable records and bytes.
    """
    in_place = watch and not as_json and sys.stdout.isatty()
    with errors(directory), segwal.open(directory, readonly=True) as wal:
        before: dict[str, Any] | None = None
        last = time.monotonic()
        shown = 0
        try:
            while True:
                if shown:
                    wal.refresh()
                snap = _snapshot(wal)
                now = time.monotonic()
                if watch:
                    _rates(snap, before, now - last)
                before, last = snap, now
                if as_json:
                    emit_json(snap)
                else:
                    if in_place:
                        click.clear()
                    elif shown:
                        click.echo("")
                    _show(snap, watch)
                shown += 1
                if not watch or (count is not None and shown >= count):
                    return
                time.sleep(interval)
        except KeyboardInterrupt:
            return
