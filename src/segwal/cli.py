"""The ``segwal`` command: inspect, verify and dump a log, and the crash demo.

Uses only the public API of ``segwal``. Data goes to stdout; logs, progress and errors to
stderr. Exit codes: 0 ok, 1 corruption or verification failure, 2 usage, 3 I/O error.
``--json`` output is a contract: fields may be added, never removed or retyped; LSNs are
integers, times RFC 3339 in UTC, binary data base64, empty lists ``[]``.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import click

import segwal
from segwal.demo import DemoError, run_child, run_demo

EXIT_OK = 0
EXIT_CORRUPT = 1
EXIT_USAGE = 2
EXIT_IO = 3

_PREVIEW_BYTES = 20


class Failure(click.ClickException):
    """An error shown as ``segwal: error: ...`` with a hint, ending with ``exit_code``."""

    def __init__(self, message: str, *, hint: str = "", exit_code: int = EXIT_CORRUPT) -> None:
        super().__init__(message)
        self.hint = hint
        # click reads exit_code per instance; its stubs declare a class variable.
        self.exit_code = exit_code  # type: ignore[misc]

    def show(self, file: Any = None) -> None:
        click.echo(f"segwal: error: {self.format_message()}", err=True)
        if self.hint:
            click.echo(f"segwal: hint: {self.hint}", err=True)


def _warn(message: str) -> None:
    click.echo(f"segwal: warning: {message}", err=True)


def rfc3339(us: int) -> str:
    """An RFC 3339 UTC time with microseconds from microseconds since the epoch."""
    seconds, micros = divmod(us, 1_000_000)
    moment = datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=micros)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _rfc3339_or_none(us: int) -> str | None:
    return rfc3339(us) if us else None


def _storage_failure(exc: OSError, directory: str) -> Failure:
    code = exc.errno
    if code == errno.ENOENT:
        return Failure(
            f"{directory}: no such directory",
            hint="check the path; a segwal log is a directory of 00000000000000000001.wal files",
            exit_code=EXIT_IO,
        )
    if code == errno.ENOTDIR:
        return Failure(
            f"{directory}: not a directory",
            hint="pass the log's directory, not one of its files",
            exit_code=EXIT_IO,
        )
    if code in (errno.EACCES, errno.EPERM):
        return Failure(
            f"{directory}: permission denied ({exc})",
            hint="run as a user who can read the log's files",
            exit_code=EXIT_IO,
        )
    return Failure(
        f"I/O error on {directory}: {exc}",
        hint="check the disk and the file system (dmesg), then try again",
        exit_code=EXIT_IO,
    )


@contextlib.contextmanager
def _errors(directory: str) -> Iterator[None]:
    """Turn segwal's exceptions into messages that say what to try next, and exit codes."""
    try:
        yield
    except segwal.UnsupportedFormatError as exc:
        hint = exc.hint or "upgrade segwal (pip install -U segwal) to read this log"
        raise Failure(str(exc), hint=hint, exit_code=EXIT_CORRUPT) from exc
    except segwal.CorruptionError as exc:
        raise Failure(
            f"corruption: {exc}",
            hint=f"run 'segwal verify {directory}' for a per-segment report",
            exit_code=EXIT_CORRUPT,
        ) from exc
    except segwal.LockError as exc:
        holder = f"process {exc.pid}" if exc.pid else "another process"
        raise Failure(
            f"{directory} is locked by {holder}, which is writing the log",
            hint="stop that writer or use another directory; 'segwal info' and 'segwal dump' "
            "can read a locked log",
            exit_code=EXIT_IO,
        ) from exc
    except segwal.ConfigError as exc:
        raise Failure(str(exc), hint="see 'segwal --help'", exit_code=EXIT_USAGE) from exc
    except segwal.StorageError as exc:
        raise _storage_failure(exc, directory) from exc
    except segwal.WalFailedError as exc:
        raise Failure(str(exc), hint="check the disk, then run again", exit_code=EXIT_IO) from exc
    except DemoError as exc:
        raise Failure(str(exc), hint=exc.hint, exit_code=exc.exit_code) from exc
    except segwal.SegwalError as exc:
        raise Failure(str(exc), exit_code=EXIT_CORRUPT) from exc
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            raise  # stdout closed early (segwal dump | head): click handles it quietly
        raise _storage_failure(exc, directory) from exc


def _emit_json(data: object) -> None:
    click.echo(json.dumps(data, sort_keys=False))


@contextlib.contextmanager
def _spinner(text: str) -> Iterator[None]:
    """A spinner on stderr while slow work runs, with rich and a terminal; else nothing."""
    if not sys.stderr.isatty():
        yield
        return
    try:
        from rich.console import Console
    except ImportError:  # rich is an optional extra
        yield
        return
    with Console(stderr=True).status(text):
        yield


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _lsn_range(first: int, last: int) -> str:
    return f"{first}..{last}" if last >= first else "-"


# -- the group ---------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(segwal.__version__, "-V", "--version", prog_name="segwal")
def main() -> None:
    """Inspect and check segwal write-ahead logs, and watch one survive SIGKILL.

    Every command but 'demo' is read-only. Exit codes: 0 ok, 1 corruption or
    verification failure, 2 usage error, 3 I/O error.
    """


# -- info --------------------------------------------------------------------------------


def _segment_dict(info: segwal.SegmentInfo) -> dict[str, Any]:
    return {
        "file": os.path.basename(info.path),
        "path": info.path,
        "sequence": info.sequence,
        "first_lsn": info.first_lsn,
        "last_lsn": info.last_lsn,
        "records": max(0, info.record_count),
        "size_bytes": info.size_bytes,
        "sealed": info.sealed,
        "created": rfc3339(info.created_us),
        "created_us": info.created_us,
        "min_timestamp": _rfc3339_or_none(info.min_timestamp_us),
        "max_timestamp": _rfc3339_or_none(info.max_timestamp_us),
        "digest": info.digest or None,
    }


def _recovery_dict(report: segwal.RecoveryReport) -> dict[str, Any]:
    return {
        "mode": report.mode,
        "clean": report.clean,
        "torn_tail": report.torn_tail,
        "torn_tail_would_be_cut": report.torn_tail,
        "bytes_to_cut": sum(c.length for c in report.cuts),
        "cuts": [
            {
                "file": os.path.basename(c.path),
                "path": c.path,
                "offset": c.offset,
                "length": c.length,
                "lsn": c.lsn,
                "reason": c.reason,
            }
            for c in report.cuts
        ],
        "foreign_files": list(report.foreign_files),
    }


@main.command(short_help="Show LSNs, segments and what recovery would do.")
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (a stable contract).")
def info(directory: str, as_json: bool) -> None:
    """Show a log's LSNs, segments and what recovery would do, without changing anything.

    Works while another process writes the log; it then shows what that writer has made
    durable.
    """
    with _errors(directory), segwal.open(directory, readonly=True) as wal:
        segments = wal.segments()
        report = wal.recovery
        first, last, durable = wal.first_lsn, wal.last_lsn, wal.durable_lsn
    records = max(0, last - first + 1)
    if as_json:
        _emit_json(
            {
                "path": os.path.abspath(directory),
                "first_lsn": first,
                "last_lsn": last,
                "durable_lsn": durable,
                "next_lsn": last + 1,
                "records": records,
                "segment_count": len(segments),
                "size_bytes": sum(s.size_bytes for s in segments),
                "segments": [_segment_dict(s) for s in segments],
                "recovery": _recovery_dict(report),
            }
        )
        return
    if not segments:
        _warn(f"{directory} holds no segment files; is it a segwal log directory?")
    sealed = sum(s.sealed for s in segments)
    size = sum(s.size_bytes for s in segments)
    click.echo(f"log           {os.path.abspath(directory)}")
    click.echo(f"LSNs          {_lsn_range(first, last)} ({records} records)")
    click.echo(f"first LSN     {first}")
    click.echo(f"last LSN      {last}")
    click.echo(f"durable LSN   {durable}")
    click.echo(f"segments      {len(segments)} ({sealed} sealed), {size} bytes")
    if report.cuts:
        for cut in report.cuts:
            click.echo(
                f"recovery      torn tail would be cut: yes, {cut.length} bytes at offset "
                f"{cut.offset} of {os.path.basename(cut.path)} (LSN {cut.lsn}): {cut.reason}"
            )
    else:
        click.echo("recovery      torn tail would be cut: no")
    for path in report.foreign_files:
        click.echo(f"foreign file  {path} (ignored)")
    if segments:
        click.echo("")
        rows = [["FILE", "LSNS", "RECORDS", "SIZE", "SEALED", "CREATED"]]
        for s in segments:
            rows.append(
                [
                    os.path.basename(s.path),
                    _lsn_range(s.first_lsn, s.last_lsn),
                    str(max(0, s.record_count)),
                    str(s.size_bytes),
                    "yes" if s.sealed else "no",
                    rfc3339(s.created_us),
                ]
            )
        for line in _table(rows, right={2, 3}):
            click.echo(line)


# -- verify ------------------------------------------------------------------------------


def _problem_kinds(report: segwal.VerifyReport) -> dict[str, str]:
    kinds: dict[str, str] = {}
    for problem in report.problems:
        if kinds.get(problem.path) != "corruption":
            kinds[problem.path] = problem.kind
    return kinds


def _check_status(check: segwal.SegmentCheck, kinds: dict[str, str]) -> str:
    if check.ok:
        return "clean"
    return "torn_tail" if kinds.get(check.path) == "torn_tail" else "corrupt"


@main.command(short_help="Check every checksum, seal and digest of a log.")
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (a stable contract).")
def verify(directory: str, as_json: bool) -> None:
    """Read every byte of a log and check every checksum, seal and digest.

    Prints per segment "clean" or the first bad offset, then a summary. Exits 1 when a
    segment is corrupt; a torn tail (what a crash leaves at the very end) is a warning.
    """
    with _errors(directory), _spinner(f"verifying {directory}"):
        report = segwal.verify(directory)
    kinds = _problem_kinds(report)
    torn = [p for p in report.problems if p.kind == "torn_tail"]
    corrupt = [p for p in report.problems if p.kind != "torn_tail"]
    if as_json:
        _emit_json(
            {
                "path": os.path.abspath(directory),
                "ok": report.ok,
                "records": report.records,
                "first_lsn": report.first_lsn,
                "last_lsn": report.last_lsn,
                "segments": [
                    {
                        "file": os.path.basename(c.path),
                        "path": c.path,
                        "first_lsn": c.first_lsn,
                        "last_lsn": c.last_lsn,
                        "records": c.records,
                        "sealed": c.sealed,
                        "ok": c.ok,
                        "status": _check_status(c, kinds),
                        "bad_offset": c.bad_offset,
                        "reason": c.reason,
                    }
                    for c in report.segments
                ],
                "problems": [
                    {
                        "kind": p.kind,
                        "path": p.path,
                        "offset": p.offset,
                        "lsn": p.lsn,
                        "reason": p.reason,
                    }
                    for p in report.problems
                ],
            }
        )
    else:
        if not report.segments:
            _warn(f"{directory} holds no segment files; is it a segwal log directory?")
        width = max((len(os.path.basename(c.path)) for c in report.segments), default=0)
        for check in report.segments:
            name = os.path.basename(check.path).ljust(width)
            lsns = f"LSNs {_lsn_range(check.first_lsn, check.last_lsn)}".ljust(28)
            status = _check_status(check, kinds)
            if status == "clean":
                verdict = "clean"
            else:
                where = (
                    f"first bad offset {check.bad_offset}"
                    if check.bad_offset is not None
                    else "bad"
                )
                verdict = f"{where}: {check.reason}"
                if status == "torn_tail":
                    verdict = f"torn tail, {verdict}"
            click.echo(f"{name}  {lsns}  {verdict}")
        segments = len(report.segments)
        lsns = _lsn_range(report.first_lsn, report.last_lsn)
        if report.ok:
            extra = f", {len(torn)} torn tail (not corruption)" if torn else ""
            click.echo(
                f"verify: ok, {segments} segments, {report.records} records, LSNs {lsns}{extra}"
            )
        else:
            bad = sum(1 for c in report.segments if _check_status(c, kinds) == "corrupt")
            click.echo(
                f"verify: FAILED, {bad} of {segments} segments corrupt, {report.records} "
                f"readable records, LSNs {lsns}"
            )
    for problem in torn:
        _warn(
            f"torn tail: {problem}; a crash mid-write leaves this, and opening the log cuts "
            "it (records acknowledged as durable are never in one)"
        )
    if not report.ok:
        first = corrupt[0] if corrupt else None
        hint = "restore the damaged segments from a backup or an archive"
        if first is not None and first.lsn is not None and first.lsn > report.first_lsn:
            hint += (
                f"; the records before the damage are still readable: "
                f"segwal dump {directory} --to {first.lsn - 1}"
            )
        raise Failure(
            f"verification failed: {len(corrupt)} problem(s)"
            + (f"; the first: {first}" if first else ""),
            hint=hint,
            exit_code=EXIT_CORRUPT,
        )


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


@main.command(short_help="Print the records of a log (--json: NDJSON).")
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.option("--from", "from_lsn", type=click.IntRange(min=1), help="First LSN to print.")
@click.option("--to", "to_lsn", type=click.IntRange(min=0), help="Last LSN to print.")
@click.option("--json", "as_json", is_flag=True, help="NDJSON: one object per record.")
@click.option(
    "--unsynced",
    is_flag=True,
    help="Also print records a live writer has not made durable yet.",
)
def dump(
    directory: str, from_lsn: int | None, to_lsn: int | None, as_json: bool, unsynced: bool
) -> None:
    """Print the records of a log, oldest first, without changing anything.

    With --json, each line is {"lsn", "type", "timestamp" (RFC 3339), "timestamp_us",
    "payload" (base64)}.
    """
    if from_lsn is not None and to_lsn is not None and to_lsn < from_lsn:
        raise click.BadParameter(f"--to {to_lsn} is before --from {from_lsn}", param_hint="'--to'")
    fmt: Callable[[segwal.Record], str] = _record_json if as_json else _record_line
    with _errors(directory), segwal.open(directory, readonly=True) as wal:
        for record in wal.replay(from_lsn, to_lsn, unsynced=unsynced):
            click.echo(fmt(record))


# -- demo --------------------------------------------------------------------------------


@main.command(short_help="SIGKILL a writer mid-write; check nothing acknowledged is lost.")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=str))
@click.option(
    "--kills",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="How many times to kill the writer and recover, appending after each recovery.",
)
@click.option("--seed", type=int, help="Seed for batch sizes and kill times, to repeat a run.")
def demo(directory: str | None, kills: int, seed: int | None) -> None:
    """Kill a writer with SIGKILL mid-write, recover, and check nothing acknowledged is lost.

    A child process appends with sync='always' to 64 KiB segments and reports every
    acknowledged LSN; after a random 0.3-1.0 s it is killed, the log is reopened, every
    acknowledged record is checked byte for byte, and the log is verified. DIRECTORY
    defaults to a new temporary directory. Exits 1 if an acknowledged record was lost.
    """
    with _errors(directory or "the demo directory"):
        code = run_demo(directory, kills=kills, seed=seed)
    if code:
        raise Failure(
            "acknowledged records were lost or damaged; see the report above",
            hint="keep the log directory and report it as a segwal bug",
            exit_code=code,
        )


@main.command("_demo-child", hidden=True)
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.option("--seed", type=int, default=0)
@click.option("--max-seconds", type=float, default=60.0)
def demo_child(directory: str, seed: int, max_seconds: float) -> None:
    """The writer process of 'segwal demo' (internal)."""
    sys.exit(run_child(directory, seed=seed, max_seconds=max_seconds))
