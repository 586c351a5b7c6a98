"""The commands that print records: ``dump`` (a range, or from a time) and ``tail`` (the
newest, and with -f every new one)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

import click

import segwal
from segwal.cli.common import errors, kek_option, key_options, parse_duration, rfc3339

_PREVIEW_BYTES = 20


# -- dump --------------------------------------------------------------------------------


def _preview(payload: bytes) -> str:
    text = repr(payload[:_PREVIEW_BYTES])
    return text + "..." if len(payload) > _PREVIEW_BYTES else text


def _record_json(record: segwal.Record) -> str:
    return json.dumps(
        {
            "lsn": record.lsn,
            "type": record.type,
            "timestamp": rfc3339(record.timestamp_us),
            "timestamp_us": record.timestamp_us,
            "payload": base64.b64encode(record.payload).decode("ascii"),
        }
    )


def _record_line(record: segwal.Record) -> str:
    return (
        f"{record.lsn:>10}  type {record.type:<5}  {rfc3339(record.timestamp_us)}  "
        f"{len(record.payload):>8} B  {_preview(record.payload)}"
    )


@click.command(short_help="Print the records of a log (--json: NDJSON).")
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.option("--from", "from_lsn", type=click.IntRange(min=1), help="First LSN to print.")
@click.option("--to", "to_lsn", type=click.IntRange(min=0), help="Last LSN to print.")
@click.option("--json", "as_json", is_flag=True, help="NDJSON: one object per record.")
@click.option(
    "--since",
    "since",
    metavar="TIME",
    help="Start at the first record appended at or after TIME: RFC 3339 "
    "(2026-11-21T14:00:00Z), microseconds since the epoch, or an age such as 15m or 2h.",
)
@click.option(
    "--unsynced",
    is_flag=True,
    help="Also print records a live writer has not made durable yet.",
)
@kek_option
def dump(
    directory: str,
    from_lsn: int | None,
    to_lsn: int | None,
    as_json: bool,
    since: str | None,
    unsynced: bool,
    kek_file: str | None,
) -> None:
    """Print the records of a log, oldest first, without changing anything.

    With --json, each line is {"lsn", "type", "timestamp" (RFC 3339), "timestamp_us",
    "payload" (base64)}.
    """
    if from_lsn is not None and to_lsn is not None and to_lsn < from_lsn:
        raise click.BadParameter(f"--to {to_lsn} is before --from {from_lsn}", param_hint="'--to'")
    since_us = None if since is None else _parse_time(since)
    fmt: Callable[[segwal.Record], str] = _record_json if as_json else _record_line
    options = key_options(kek_file)
    with errors(directory), segwal.open(directory, readonly=True, **options) as wal:
        if since_us is not None:
            from_lsn = max(from_lsn or 1, wal.lsn_at(since_us, unsynced=unsynced))
        for record in wal.replay(from_lsn, to_lsn, unsynced=unsynced):
            click.echo(fmt(record))


def _parse_time(text: str) -> int:
    """Microseconds since the epoch from RFC 3339, a number of microseconds, or an age."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        try:
            age = parse_duration(text)
        except ValueError:
            raise click.BadParameter(
                f"{text!r} is not a time: use RFC 3339 (2026-11-21T14:00:00Z), "
                "microseconds since the epoch, or an age such as 15m",
                param_hint="'--since'",
            ) from None
        return int((time.time() - age) * 1e6)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return int(stamp.timestamp() * 1e6)


@click.command(short_help="Print the newest records; -f keeps following the log.")
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.option("-f", "--follow", "follow", is_flag=True, help="Wait for new records and print them.")
@click.option("--from", "from_lsn", type=click.IntRange(min=1), help="Start at this LSN.")
@click.option(
    "-n",
    "--lines",
    "count",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="How many of the newest records to start with (ignored with --from).",
)
@click.option("--json", "as_json", is_flag=True, help="NDJSON: one object per record.")
@kek_option
def tail(
    directory: str,
    follow: bool,
    from_lsn: int | None,
    count: int,
    as_json: bool,
    kek_file: str | None,
) -> None:
    """Print the newest durable records, and with -f every new one as it becomes durable.

    Works beside a live writer in another process: it opens the log readonly and only
    ever shows records the writer has made durable. Stop following with Ctrl-C.
    """
    fmt: Callable[[segwal.Record], str] = _record_json if as_json else _record_line
    options = key_options(kek_file)
    with errors(directory), segwal.open(directory, readonly=True, **options) as wal:
        start = (
            from_lsn if from_lsn is not None else max(wal.first_lsn, wal.durable_lsn - count + 1)
        )
        records = wal.follow(start) if follow else wal.replay(start)
        try:
            for record in records:
                click.echo(fmt(record))
        except KeyboardInterrupt:
            return
