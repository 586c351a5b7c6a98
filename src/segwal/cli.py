"""The ``segwal`` command: inspect, verify and dump a log, truncate and prune it, manage
holds, and the crash demo.

Uses only the public API of ``segwal``. Data goes to stdout; logs, progress and errors to
stderr. Exit codes: 0 ok, 1 corruption or verification failure, 2 usage (also: a change that
needs ``--yes`` and did not get it, an LSN out of range, a hold in the way), 3 I/O error.
Commands that delete records (truncate, prune) print their plan and change nothing unless
given ``--yes``; ``--dry-run`` only prints the plan.
``--json`` output is a contract: fields may be added, never removed or retyped; LSNs are
integers, times RFC 3339 in UTC, binary data base64, empty lists ``[]``.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

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
            hint="stop that writer or use another directory; 'segwal info', 'segwal dump' "
            "and --dry-run can read a locked log",
            exit_code=EXIT_IO,
        ) from exc
    except segwal.ConfigError as exc:
        raise Failure(str(exc), hint="see 'segwal --help'", exit_code=EXIT_USAGE) from exc
    except segwal.HoldError as exc:
        raise Failure(
            str(exc),
            hint=f"list holds with 'segwal holds {directory}'; release one with "
            f"'segwal holds {directory} --release {exc.name}'",
            exit_code=EXIT_USAGE,
        ) from exc
    except segwal.ReaderFellBehindError as exc:
        raise Failure(
            str(exc), hint="the log was pruned while it was read; run again", exit_code=EXIT_IO
        ) from exc
    except segwal.NotFoundError as exc:
        raise Failure(
            str(exc), hint=f"'segwal info {directory}' shows the LSNs", exit_code=EXIT_USAGE
        ) from exc
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
    """Inspect, check and trim segwal write-ahead logs, and watch one survive SIGKILL.

    info, verify, dump and 'holds' (listing) are read-only. truncate and prune delete
    records: they show their plan and change nothing without --yes. 'holds --set' and
    'holds --release' change only holds, and 'demo' writes its own log.

    Exit codes: 0 ok, 1 corruption or verification failure, 2 usage error (also a change
    that needs --yes, an LSN out of range, a hold in the way), 3 I/O error.
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
def dump(
    directory: str,
    from_lsn: int | None,
    to_lsn: int | None,
    as_json: bool,
    since: str | None,
    unsynced: bool,
) -> None:
    """Print the records of a log, oldest first, without changing anything.

    With --json, each line is {"lsn", "type", "timestamp" (RFC 3339), "timestamp_us",
    "payload" (base64)}.
    """
    if from_lsn is not None and to_lsn is not None and to_lsn < from_lsn:
        raise click.BadParameter(f"--to {to_lsn} is before --from {from_lsn}", param_hint="'--to'")
    since_us = None if since is None else _parse_time(since)
    fmt: Callable[[segwal.Record], str] = _record_json if as_json else _record_line
    with _errors(directory), segwal.open(directory, readonly=True) as wal:
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


@main.command(short_help="Print the newest records; -f keeps following the log.")
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
def tail(directory: str, follow: bool, from_lsn: int | None, count: int, as_json: bool) -> None:
    """Print the newest durable records, and with -f every new one as it becomes durable.

    Works beside a live writer in another process: it opens the log readonly and only
    ever shows records the writer has made durable. Stop following with Ctrl-C.
    """
    fmt: Callable[[segwal.Record], str] = _record_json if as_json else _record_line
    with _errors(directory), segwal.open(directory, readonly=True) as wal:
        start = (
            from_lsn if from_lsn is not None else max(wal.first_lsn, wal.durable_lsn - count + 1)
        )
        records = wal.follow(start) if follow else wal.replay(start)
        try:
            for record in records:
                click.echo(fmt(record))
        except KeyboardInterrupt:
            return


# -- sizes, durations and the write verbs' shared parts ---------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.I)
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.I)
_SIZE_UNITS = {"": 1, "b": 1}
for _i, _letter in enumerate("kmgtp", start=1):
    _SIZE_UNITS[_letter] = 1024**_i  # K, M, G: binary, as dd and most tools read them
    _SIZE_UNITS[f"{_letter}ib"] = 1024**_i
    _SIZE_UNITS[f"{_letter}b"] = 1000**_i
_SEGMENT_FILE = re.compile(r"^\d{20}\.wal$")


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``15m``, ``12h``, ``7d``, ``2w`` or ``1.5h`` (a bare number: seconds)."""
    match = _DURATION.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _DURATION_UNITS:
        raise ValueError(f"{text!r} is not a duration; use a number and s, m, h, d or w: 90s, 7d")
    seconds = float(match.group(1)) * _DURATION_UNITS[unit]
    if seconds <= 0:
        raise ValueError(f"{text!r}: the duration must be more than zero")
    return seconds


def parse_size(text: str) -> int:
    """Bytes in ``512KiB``, ``10GiB``, ``1GB`` or ``1.5M`` (KiB, MiB...: 1024; KB, MB...: 1000;
    K, M, G alone: 1024; a bare number: bytes)."""
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size; use a number and B, KiB, MiB, GiB, KB, MB, GB")
    size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size < 1:
        raise ValueError(f"{text!r}: the size must be at least 1 byte")
    return size


if TYPE_CHECKING:
    _ParamType = click.ParamType[Any]
else:  # click < 8.3 has no type parameters at runtime
    _ParamType = click.ParamType


class _Parsed(_ParamType):
    def __init__(self, name: str, parse: Callable[[str], Any]) -> None:
        self.name = name
        self._parse = parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self._parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = _Parsed("duration", parse_duration)
SIZE = _Parsed("size", parse_size)


def _write_options(func: Callable[..., None]) -> Callable[..., None]:
    """--dry-run, --yes and --json, shared by the commands that delete records."""
    func = click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON object (a stable contract)."
    )(func)
    func = click.option(
        "--yes", "-y", is_flag=True, help="Do it. Without --yes only the plan is shown (exit 2)."
    )(func)
    return click.option(
        "--dry-run", is_flag=True, help="Only show the plan and exit 0; changes nothing."
    )(func)


def _require_log(directory: str) -> None:
    """Commands that change a log never create one: the directory must hold a log."""
    try:
        names = [entry.name for entry in segwal.OsFileSystem().list_dir(directory)]
    except OSError as exc:
        raise _storage_failure(exc, directory) from exc
    if not any(_SEGMENT_FILE.match(name) for name in names):
        raise Failure(
            f"{directory} holds no segwal log",
            hint="check the path; a segwal log is a directory of 00000000000000000001.wal files",
            exit_code=EXIT_USAGE,
        )


def _need_yes(what: str, command: str) -> Failure:
    return Failure(
        f"nothing changed: {what} needs --yes",
        hint=f"run '{command} --yes' to do it, or add --dry-run to only show the plan",
        exit_code=EXIT_USAGE,
    )


def _size_text(size: int) -> str:
    return f"{size} B"


# -- truncate ----------------------------------------------------------------------------


def _truncate_actions(
    segments: list[segwal.SegmentInfo], before: int | None, after: int | None
) -> list[dict[str, Any]]:
    """What truncate_before / truncate_after does to each segment: delete, rewrite or keep."""
    rows = []
    for s in segments:
        action = "keep"
        below = before is not None and s.sealed and s.last_lsn < before
        if below or (after is not None and s.first_lsn > after):
            action = "delete"
        elif after is not None and s.last_lsn > after:
            action = "rewrite"  # its records after the LSN are cut off
        rows.append(
            {
                "file": os.path.basename(s.path),
                "path": s.path,
                "first_lsn": s.first_lsn,
                "last_lsn": s.last_lsn,
                "size_bytes": s.size_bytes,
                "sealed": s.sealed,
                "action": action,
            }
        )
    return rows


def _check_truncate(
    before: int | None, after: int | None, first: int, last: int, holds: dict[str, int]
) -> None:
    """The checks truncate_before / truncate_after make, for a plan made readonly."""
    if before is not None:
        if not first <= before <= last + 1:
            raise Failure(
                f"cannot truncate before LSN {before}: the log holds LSNs {first}..{last} "
                f"(use {first}..{last + 1})",
                hint="'segwal info' shows the log's LSNs",
                exit_code=EXIT_USAGE,
            )
        blocking = sorted((lsn, name) for name, lsn in holds.items() if lsn < before)
        if blocking:
            lsn, name = blocking[0]
            raise segwal.HoldError(name, lsn, before)
    elif after is not None and not first - 1 <= after <= last:
        raise Failure(
            f"cannot truncate after LSN {after}: the log holds LSNs {first}..{last} "
            f"(use {first - 1}..{last})",
            hint="'segwal info' shows the log's LSNs",
            exit_code=EXIT_USAGE,
        )


@main.command(short_help="Drop the records before or after an LSN (needs --yes).")
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.option(
    "--before",
    type=click.IntRange(min=0),
    metavar="LSN",
    help="Checkpoint: records below LSN are never returned again; whole segments below it "
    "are deleted. LSN may be the last LSN + 1 to drop every record.",
)
@click.option(
    "--after",
    type=click.IntRange(min=0),
    metavar="LSN",
    help="Rewind: records above LSN are deleted and the next append gets LSN + 1.",
)
@_write_options
def truncate(
    directory: str,
    before: int | None,
    after: int | None,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Drop every record before (--before) or after (--after) an LSN; give exactly one.

    Crash-safe: the new first LSN, or the intent to rewind, is made durable before any
    file goes. With --yes it opens the log as its writer, so no other process may be
    writing it. Without --yes it prints what it would do and, if that changes anything,
    exits 2; --dry-run prints it and exits 0. A hold below the LSN refuses --before (see
    'segwal holds').
    """
    if (before is None) == (after is None):
        raise click.UsageError("give exactly one of --before LSN or --after LSN")
    lsn = before if before is not None else after
    assert lsn is not None
    operation = "truncate_before" if before is not None else "truncate_after"
    apply = yes and not dry_run
    with _errors(directory):
        _require_log(directory)
        result: segwal.TruncateResult | None = None
        if apply:
            with segwal.open(directory) as wal:
                segments = wal.segments()
                first, last = wal.first_lsn, wal.last_lsn
                if before is not None:
                    result = wal.truncate_before(before)
                else:
                    result = wal.truncate_after(lsn)
        else:
            with segwal.open(directory, readonly=True) as wal:
                segments = wal.segments()
                first, last = wal.first_lsn, wal.last_lsn
                holds = wal.holds()
            _check_truncate(before, after, first, last, holds)
    rows = _truncate_actions(segments, before, after)
    if lsn == (first if before is not None else last):
        rows = [{**row, "action": "keep"} for row in rows]  # nothing to do
    deleted = [row for row in rows if row["action"] == "delete"]
    if result is not None:
        new_first, new_last = result.first_lsn, result.last_lsn
        count, reclaimed = result.segments_deleted, result.bytes_reclaimed
    else:
        new_first = max(first, before) if before is not None else first
        new_last = last if before is not None else lsn
        count, reclaimed = len(deleted), sum(row["size_bytes"] for row in deleted)
    if as_json:
        _emit_json(
            {
                "path": os.path.abspath(directory),
                "operation": operation,
                "lsn": lsn,
                "dry_run": not apply,
                "applied": apply,
                "before": {"first_lsn": first, "last_lsn": last},
                "after": {"first_lsn": new_first, "last_lsn": new_last},
                "segments": rows,
                "segments_deleted": count,
                "bytes_reclaimed": reclaimed,
            }
        )
    else:
        verb = "before" if before is not None else "after"
        click.echo(
            f"truncate {verb} LSN {lsn}: LSNs {_lsn_range(first, last)} -> "
            f"{_lsn_range(new_first, new_last)}"
        )
        table = [["ACTION", "FILE", "LSNS", "SIZE"]]
        for row in rows:
            if row["action"] != "keep":
                table.append(
                    [
                        row["action"],
                        row["file"],
                        _lsn_range(row["first_lsn"], row["last_lsn"]),
                        _size_text(row["size_bytes"]),
                    ]
                )
        if len(table) > 1:
            for line in _table(table, right={3}):
                click.echo(f"  {line}")
        rewrites = [row["file"] for row in rows if row["action"] == "rewrite"]
        cut = f" and cut {rewrites[0]} after LSN {lsn}" if rewrites else ""
        if apply:
            click.echo(
                f"deleted {count} segments{cut}, {reclaimed} bytes reclaimed; "
                f"the log holds LSNs {_lsn_range(new_first, new_last)}"
            )
        else:
            click.echo(
                f"would delete {count} segments ({reclaimed} bytes){cut}; "
                f"the log would hold LSNs {_lsn_range(new_first, new_last)}"
            )
    if not apply and not dry_run and (new_first, new_last) != (first, last):
        verb = "before" if before is not None else "after"
        raise _need_yes(
            f"truncate --{verb}", f"segwal truncate {shlex.quote(directory)} --{verb} {lsn}"
        )


# -- prune -------------------------------------------------------------------------------


def _readonly_plan(directory: str, options: dict[str, Any]) -> list[segwal.Decision]:
    """The retention plan the writer would make, without opening the log as its writer."""
    with segwal.open(directory, readonly=True, **options) as wal:
        return wal.retention_plan()


def _decision_dict(decision: segwal.Decision) -> dict[str, Any]:
    s = decision.segment
    return {
        "file": os.path.basename(s.path),
        "path": s.path,
        "first_lsn": s.first_lsn,
        "last_lsn": s.last_lsn,
        "size_bytes": s.size_bytes,
        "sealed": s.sealed,
        "newest_record": _rfc3339_or_none(s.max_timestamp_us),
        "newest_record_us": s.max_timestamp_us,
        "delete": decision.delete,
        "rule": decision.rule,
        "kept_by": decision.kept_by,
    }


def _deletion_dict(deletion: segwal.Deletion) -> dict[str, Any]:
    return {
        "file": os.path.basename(deletion.path),
        "path": deletion.path,
        "first_lsn": deletion.first_lsn,
        "last_lsn": deletion.last_lsn,
        "size_bytes": deletion.size_bytes,
        "rule": deletion.rule,
        "deferred": deletion.deferred,
    }


def _why(decision: segwal.Decision) -> str:
    if decision.delete:
        return f"rule {decision.rule}"
    if decision.kept_by:
        wanted = f" ({decision.rule} would delete it)" if decision.rule else ""
        return f"kept by {decision.kept_by}{wanted}"
    return "no rule applies"


@main.command(short_help="Delete old segments by age or total size (needs --yes).")
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.option(
    "--max-age",
    type=DURATION,
    metavar="AGE",
    help="Delete sealed segments whose newest record is older than AGE: 90s, 15m, 12h, 7d.",
)
@click.option(
    "--max-bytes",
    type=SIZE,
    metavar="SIZE",
    help="Delete the oldest sealed segments while the log is larger than SIZE: 512KiB, "
    "10GiB, 1GB (KiB = 1024, KB = 1000).",
)
@click.option(
    "--min-segments",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    metavar="K",
    help="Always keep the newest K sealed segments.",
)
@_write_options
def prune(
    directory: str,
    max_age: float | None,
    max_bytes: int | None,
    min_segments: int,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete whole sealed segments by age (--max-age) or total size (--max-bytes).

    Oldest first, never the active segment, never a record at or above a hold (see
    'segwal holds'), never leaving a gap. The plan says for each segment whether it goes,
    by which rule, or what keeps it. Without --yes it prints the plan and, if it would
    delete anything, exits 2; --dry-run prints it and exits 0. With --yes it opens the log
    as its writer.
    """
    if max_age is None and max_bytes is None:
        raise click.UsageError("give --max-age, --max-bytes or both")
    options: dict[str, Any] = {
        "retention_max_age": max_age,
        "retention_max_bytes": max_bytes,
        "retention_min_segments": min_segments,
    }
    apply = yes and not dry_run
    result: segwal.RetentionResult | None = None
    with _errors(directory):
        _require_log(directory)
        if apply:
            with segwal.open(directory, **options) as wal:
                first, last = wal.first_lsn, wal.last_lsn
                plan = wal.retention_plan()
                result = wal.apply_retention()
        else:
            with segwal.open(directory, readonly=True) as wal:
                first, last = wal.first_lsn, wal.last_lsn
            plan = _readonly_plan(directory, options)
    doomed = [d for d in plan if d.delete]
    planned_bytes = sum(d.segment.size_bytes for d in doomed)
    planned_first = max(first, doomed[-1].segment.last_lsn + 1) if doomed else first
    deleted = result.deleted if result is not None else ()
    new_first = result.first_lsn if result is not None else planned_first
    if as_json:
        _emit_json(
            {
                "path": os.path.abspath(directory),
                "dry_run": not apply,
                "applied": apply,
                "rules": {
                    "max_age_seconds": max_age,
                    "max_bytes": max_bytes,
                    "min_segments": min_segments,
                },
                "plan": [_decision_dict(d) for d in plan],
                "segments_to_delete": len(doomed),
                "bytes_to_reclaim": planned_bytes,
                "deleted": [_deletion_dict(d) for d in deleted],
                "segments_deleted": len(deleted),
                "bytes_reclaimed": result.bytes_reclaimed if result is not None else 0,
                "first_lsn_before": first,
                "first_lsn": new_first,
                "last_lsn": last,
            }
        )
    else:
        table = [["ACTION", "FILE", "LSNS", "SIZE", "NEWEST RECORD", "WHY"]]
        for d in plan:
            s = d.segment
            table.append(
                [
                    "delete" if d.delete else "keep",
                    os.path.basename(s.path),
                    _lsn_range(s.first_lsn, s.last_lsn),
                    _size_text(s.size_bytes),
                    _rfc3339_or_none(s.max_timestamp_us) or "-",
                    _why(d),
                ]
            )
        if len(table) > 1:
            for line in _table(table, right={3}):
                click.echo(line)
        lsns = f"first LSN {first} -> {new_first}"
        if result is not None:
            deferred = sum(d.deferred for d in deleted)
            later = f" ({deferred} once their readers are done)" if deferred else ""
            click.echo(
                f"deleted {len(deleted)} of {len(plan)} segments{later}, "
                f"{result.bytes_reclaimed} bytes reclaimed; {lsns}"
            )
        else:
            click.echo(
                f"would delete {len(doomed)} of {len(plan)} segments ({planned_bytes} bytes); "
                f"{lsns}"
            )
    if not apply and not dry_run and doomed:
        command = ["segwal", "prune", directory]
        if max_age is not None:
            command += ["--max-age", f"{max_age:g}s"]
        if max_bytes is not None:
            command += ["--max-bytes", str(max_bytes)]
        if min_segments:
            command += ["--min-segments", str(min_segments)]
        raise _need_yes("pruning", shlex.join(command))


# -- holds -------------------------------------------------------------------------------


@main.command(short_help="List holds, or set or release one (no --yes needed).")
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.option(
    "--set",
    "set_hold",
    nargs=2,
    type=(str, click.IntRange(min=0)),
    metavar="NAME LSN",
    help="Keep every record at or above LSN until released (NAME: 1-128 letters, digits or ._:@-).",
)
@click.option("--release", "release", metavar="NAME", help="Drop the hold NAME.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (a stable contract).")
def holds(
    directory: str, set_hold: tuple[str, int] | None, release: str | None, as_json: bool
) -> None:
    """List the holds of a log, or set (--set NAME LSN) or release (--release NAME) one.

    A hold keeps every record at or above its LSN: no retention rule deletes it and
    'truncate --before' past it is refused. Holds survive restarts. Setting or releasing
    a hold deletes nothing, so neither needs --yes; both open the log as its writer.
    """
    if set_hold is not None and release is not None:
        raise click.UsageError("give --set or --release, not both")
    action = "set" if set_hold is not None else "release" if release is not None else "list"
    changed = False
    with _errors(directory):
        if action == "list":
            with segwal.open(directory, readonly=True) as wal:
                found = wal.holds()
                first, last = wal.first_lsn, wal.last_lsn
        else:
            _require_log(directory)
            with segwal.open(directory) as wal:
                if set_hold is not None:
                    wal.hold(set_hold[0], set_hold[1])
                    changed = True
                else:
                    assert release is not None
                    changed = wal.release(release)
                found = wal.holds()
                first, last = wal.first_lsn, wal.last_lsn
    ordered = sorted(found.items(), key=lambda item: (item[1], item[0]))
    if as_json:
        data: dict[str, Any] = {
            "path": os.path.abspath(directory),
            "action": action,
            "changed": changed,
            "first_lsn": first,
            "last_lsn": last,
            "holds": [{"name": name, "lsn": lsn} for name, lsn in ordered],
        }
        if action != "list":
            data["name"] = set_hold[0] if set_hold is not None else release
        _emit_json(data)
    else:
        if set_hold is not None:
            click.echo(f"hold {set_hold[0]!r} set at LSN {set_hold[1]}")
        elif release is not None and changed:
            click.echo(f"hold {release!r} released")
        if ordered:
            rows = [["NAME", "LSN"]] + [[name, str(lsn)] for name, lsn in ordered]
            for line in _table(rows, right={1}):
                click.echo(line)
        else:
            click.echo("no holds")
    if release is not None and not changed:
        _warn(f"{directory} has no hold named {release!r}; nothing changed")


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
