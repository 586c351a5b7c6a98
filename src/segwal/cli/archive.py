"""``segwal restore``, ``segwal mirror`` and ``segwal archive push|ls|verify|status``.

Exit codes as everywhere: 0 ok, 1 a verification failure (a damaged, missing or
conflicting archive object), 2 usage (a non-empty restore target, bad options), 3 I/O or
the remote store (unreachable, refused, pruned past a mirror). Progress goes to stderr.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import click

import segwal
from segwal.cli.common import (
    DURATION,
    EXIT_CORRUPT,
    EXIT_IO,
    EXIT_USAGE,
    SIZE,
    Failure,
    emit_json,
    errors,
    kek_option,
    key_options,
)

URL_HELP = "s3://bucket/prefix or file:///directory (AWS_* variables give endpoint and keys)"


@contextlib.contextmanager
def archive_errors(where: str) -> Iterator[None]:
    """Archive errors to exit codes, then the common mapping."""
    with errors(where):
        try:
            yield
        except segwal.RestoreTargetError as exc:
            raise Failure(
                str(exc), hint="restore into a new or empty directory", exit_code=EXIT_USAGE
            ) from exc
        except (segwal.ArchiveCorruptError, segwal.ArchiveConflictError) as exc:
            raise Failure(
                str(exc),
                hint="'segwal archive verify URL' names every damaged object",
                exit_code=EXIT_CORRUPT,
            ) from exc
        except segwal.ArchiveError as exc:
            raise Failure(
                str(exc),
                hint="check the URL, the credentials (AWS_*) and that the store is up",
                exit_code=EXIT_IO,
            ) from exc


def _time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an RFC 3339 time") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@click.command(short_help="Rebuild a log from its archive.")
@click.argument("url")
@click.argument("directory", type=click.Path(path_type=str))
@click.option("--to-lsn", type=click.IntRange(min=0), help="Restore records up to this LSN.")
@click.option("--to-time", help="Restore records appended at or before this RFC 3339 time.")
@click.option("--generation", help="Restore this generation (default: the newest holding it).")
@click.option("--parallel", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@kek_option
def restore(
    url: str,
    directory: str,
    to_lsn: int | None,
    to_time: str | None,
    generation: str | None,
    parallel: int,
    as_json: bool,
    kek_file: str | None,
) -> None:
    """Rebuild the log archived at URL in DIRECTORY, which must not exist or be empty.

    Every object is checked (size, digest against its seal, chain, no gap). An interrupted
    restore finishes when run again with the same arguments. Says which generation it
    picked and why. An encrypted log's wrapped keys are restored with it (open it with its
    key-encryption key); --kek-file is needed only to cut inside a segment."""
    if to_lsn is not None and to_time is not None:
        raise Failure("give --to-lsn or --to-time, not both", exit_code=EXIT_USAGE)
    moment = _time(to_time) if to_time is not None else None
    bar: Any = None

    def progress(done: int, total: int, _bytes: int) -> None:
        nonlocal bar
        if bar is None:
            bar = click.progressbar(length=total, label="restoring", file=sys.stderr)
            bar.__enter__()
        bar.update(1)

    try:
        with archive_errors(directory):
            result = segwal.restore(
                url,
                directory,
                to_lsn=to_lsn,
                to_time=moment,
                generation=generation,
                parallel=parallel,
                progress=progress,
                **key_options(kek_file),
            )
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    if as_json:
        emit_json(asdict(result))
        return
    click.echo(f"restore: {result.reason}", err=True)
    click.echo(
        f"restored LSNs {result.first_lsn}..{result.last_lsn} ({result.segments} segments, "
        f"{result.bytes} bytes; {result.downloaded} downloaded now, {result.retries} retries) "
        f"into {result.path}"
    )


@click.command(short_help="Keep a read-only local copy of an archived log.")
@click.argument("url")
@click.argument("directory", type=click.Path(path_type=str))
@click.option("--follow", is_flag=True, help="Keep polling until interrupted.")
@click.option(
    "--interval", type=float, default=10.0, show_default=True, help="Seconds between polls."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per update.")
def mirror(url: str, directory: str, follow: bool, interval: float, as_json: bool) -> None:
    """Copy the verified sealed segments of URL into DIRECTORY (a log readable with
    'segwal dump', open(readonly=True), follow() and cursors), and with --follow keep it
    current: one LIST request per poll."""
    stopping = threading.Event()
    if follow:
        signal.signal(signal.SIGTERM, lambda *_: stopping.set())

    def show(result: segwal.MirrorResult) -> None:
        if as_json:
            emit_json(asdict(result))
        else:
            click.echo(
                f"mirror: LSNs {result.first_lsn}..{result.last_lsn} of generation "
                f"{result.generation} (+{result.added} segments)"
            )

    # --follow ends with Ctrl-C
    with archive_errors(directory), contextlib.suppress(KeyboardInterrupt):
        segwal.mirror(
            url,
            directory,
            follow=follow,
            poll_interval=interval,
            stop=stopping.is_set,
            on_update=show,
        )


@click.group(short_help="Archive a log to object storage; list and check an archive.")
def archive() -> None:
    """Operate on archives: push a log, list, verify, and show a log's archive status."""


@archive.command(short_help="Upload a log's sealed segments not yet archived.")
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.argument("url")
@click.option("--json", "as_json", is_flag=True)
def push(directory: str, url: str, as_json: bool) -> None:
    """Archive DIRECTORY (a log not opened with archive=) to URL, once. Runs beside a live
    writer: its place is the consumer cursor 'archive', so retention waits for it."""
    with archive_errors(directory):
        status = segwal.push(directory, url)
    _show_status(status, as_json)


@archive.command(name="status", short_help="What a log directory says of its archive.")
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True)
def status(directory: str, as_json: bool) -> None:
    """The archived LSN, generation and lag recorded in DIRECTORY (no request to the store)."""
    with archive_errors(directory):
        found = segwal.archive_status(directory)
    _show_status(found, as_json)


def _show_status(status: segwal.ArchiveStatus, as_json: bool) -> None:
    if as_json:
        emit_json(asdict(status))
        return
    click.echo(f"archive     {status.url}")
    click.echo(f"generation  {status.generation or '(the next upload starts one)'}")
    click.echo(f"archived    LSN {status.archived_lsn} of {status.last_lsn}")
    click.echo(
        f"lag         {status.lag_segments} sealed segments, {status.lag_bytes} bytes, "
        f"{status.lag_seconds:.1f} s"
    )
    if status.last_error:
        click.echo(f"last error  {status.last_error}")


@archive.command(name="ls", short_help="List an archive's generations and segments.")
@click.argument("url")
@click.option("--json", "as_json", is_flag=True)
def ls(url: str, as_json: bool) -> None:
    """The generations of URL (oldest first) with parent, fork LSN and segment objects."""
    with archive_errors(url):
        listing = segwal.list_archive(url)
    rows: list[dict[str, Any]] = [
        {
            "generation": name,
            "parent": gen.parent,
            "fork_lsn": gen.fork_lsn,
            "segments": [
                {"key": s.key, "first_lsn": s.first_lsn, "size": s.size}
                for s in listing.segments.get(name, [])
            ],
        }
        for name, gen in listing.generations.items()
    ]
    if as_json:
        log_id = listing.log_id.hex() if listing.log_id else None
        emit_json({"url": url, "log_id": log_id, "generations": rows})
        return
    for row in rows:
        segments = row["segments"]
        first = segments[0]["first_lsn"] if segments else "-"
        parent = f" parent {row['parent']} at LSN {row['fork_lsn']}" if row["parent"] else ""
        size = sum(s["size"] for s in segments)
        click.echo(
            f"{row['generation']}  {len(segments)} segments from LSN {first}, {size} bytes{parent}"
        )


@archive.command(name="verify", short_help="Read and check every object of an archive.")
@click.argument("url")
@click.option("--json", "as_json", is_flag=True)
def verify(url: str, as_json: bool) -> None:
    """Check every segment object of URL (size, metadata, digest against the seal, log id,
    chain, gaps, overlaps); each problem is named with its object, LSN range and reason.
    Exits 1 when any is found."""
    with archive_errors(url):
        report = segwal.verify_archive(url)
    if as_json:
        emit_json({**asdict(report), "ok": report.ok})
    else:
        for problem in report.problems:
            span = ""
            if problem.first_lsn is not None:
                span = f" LSNs {problem.first_lsn}..{problem.last_lsn or '?'}"
            click.echo(f"{problem.kind}: {problem.key}{span}: {problem.reason}")
        verdict = "ok" if report.ok else f"FAILED, {len(report.problems)} problems"
        click.echo(
            f"archive verify: {verdict}, {report.generations} generations, "
            f"{report.objects} objects, {report.bytes} bytes"
        )
    if not report.ok:
        raise SystemExit(EXIT_CORRUPT)


@archive.command(name="prune", short_help="Archive retention: plan, then delete after a delay.")
@click.argument("url")
@click.option("--max-age", type=DURATION, help="Plan segments whose records are all older.")
@click.option("--max-bytes", type=SIZE, help="Plan the oldest segments beyond this total.")
@click.option(
    "--delay", type=DURATION, default="1h", show_default=True, help="Wait before deleting."
)
@click.option("--json", "as_json", is_flag=True)
def prune(
    url: str, max_age: float | None, max_bytes: int | None, delay: float, as_json: bool
) -> None:
    """Delete the objects earlier runs planned once their delay passed, then plan the
    oldest segments of the newest generation's history by age or size (never the newest
    segment) for deletion after --delay, so a restore or mirror in progress can finish."""
    if max_age is None and max_bytes is None:
        raise Failure("give --max-age or --max-bytes", exit_code=EXIT_USAGE)
    with archive_errors(url):
        result = segwal.prune_archive(url, max_age=max_age, max_bytes=max_bytes, delay=delay)
    if as_json:
        emit_json(asdict(result))
        return
    click.echo(
        f"archive prune: deleted {len(result.deleted)} objects, planned {len(result.planned)}, "
        f"{result.pending} manifests waiting"
    )
