"""The read-only inspection commands: ``info`` (LSNs, segments, what recovery would do)
and ``verify`` (every checksum, seal and digest)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import click

import segwal
from segwal.cli.common import (
    EXIT_CORRUPT,
    EXIT_USAGE,
    Failure,
    emit_json,
    errors,
    kek_option,
    key_options,
    lsn_range,
    quiet_stdout,
    render_table,
    rfc3339,
    rfc3339_or_none,
    warn,
)


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
        "min_timestamp": rfc3339_or_none(info.min_timestamp_us),
        "max_timestamp": rfc3339_or_none(info.max_timestamp_us),
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


def _keys(directory: str) -> tuple[segwal.KeyInfo, ...]:
    """The log keys of an encrypted log; () for a plaintext one."""
    try:
        return segwal.list_keys(directory)
    except segwal.MissingKeyError:
        return ()


@click.command(short_help="Show LSNs, segments and what recovery would do.")
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (a stable contract).")
def info(directory: str, as_json: bool) -> None:
    """Show a log's LSNs, segments and what recovery would do, without changing anything.

    Works while another process writes the log; it then shows what that writer has made
    durable.
    """
    with errors(directory), segwal.open(directory, readonly=True) as wal:
        segments = wal.segments()
        report = wal.recovery
        first, last, durable = wal.first_lsn, wal.last_lsn, wal.durable_lsn
        keys = _keys(directory)
    records = max(0, last - first + 1)
    if as_json:
        emit_json(
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
                "encryption": None
                if not keys
                else {
                    "current_key_id": next(k.key_id for k in keys if k.current),
                    "cipher": next(k.cipher for k in keys if k.current),
                    "key_ids": [k.key_id for k in keys],
                },
            }
        )
        return
    if not segments:
        warn(f"{directory} holds no segment files; is it a segwal log directory?")
    sealed = sum(s.sealed for s in segments)
    size = sum(s.size_bytes for s in segments)
    click.echo(f"log           {os.path.abspath(directory)}")
    click.echo(f"LSNs          {lsn_range(first, last)} ({records} records)")
    click.echo(f"first LSN     {first}")
    click.echo(f"last LSN      {last}")
    click.echo(f"durable LSN   {durable}")
    click.echo(f"segments      {len(segments)} ({sealed} sealed), {size} bytes")
    if keys:
        current = next(k for k in keys if k.current)
        click.echo(
            f"encryption    {current.cipher}, log key {current.key_id} current, "
            f"{len(keys)} held (segwal keys list)"
        )
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
                    lsn_range(s.first_lsn, s.last_lsn),
                    str(max(0, s.record_count)),
                    str(s.size_bytes),
                    "yes" if s.sealed else "no",
                    rfc3339(s.created_us),
                ]
            )
        for line in render_table(rows, right={2, 3}):
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
    kind = kinds.get(check.path)
    return kind if kind in ("torn_tail", "unsupported") else "corrupt"


def _print_report(
    directory: str,
    report: segwal.VerifyReport,
    kinds: dict[str, str],
    torn: list[segwal.Problem],
    as_json: bool,
) -> None:
    if as_json:
        emit_json(
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
            warn(f"{directory} holds no segment files; is it a segwal log directory?")
        width = max((len(os.path.basename(c.path)) for c in report.segments), default=0)
        for check in report.segments:
            name = os.path.basename(check.path).ljust(width)
            lsns = f"LSNs {lsn_range(check.first_lsn, check.last_lsn)}".ljust(28)
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
                elif status == "unsupported":
                    verdict = f"needs a newer segwal: {check.reason}"
            click.echo(f"{name}  {lsns}  {verdict}")
        segments = len(report.segments)
        lsns = lsn_range(report.first_lsn, report.last_lsn)
        if report.ok:
            extra = f", {len(torn)} torn tail (not corruption)" if torn else ""
            click.echo(
                f"verify: ok, {segments} segments, {report.records} records, LSNs {lsns}{extra}"
            )
        else:
            statuses = [_check_status(c, kinds) for c in report.segments]
            bad, newer = statuses.count("corrupt"), statuses.count("unsupported")
            parts = [f"{bad} of {segments} segments corrupt"] if bad or not newer else []
            if newer:
                parts.append(f"{newer} of {segments} segments need a newer segwal")
            verdict = "FAILED" if bad or not newer else "INCOMPLETE"
            click.echo(
                f"verify: {verdict}, {', '.join(parts)}, {report.records} readable records, "
                f"LSNs {lsns}"
            )


@click.command(short_help="Check every checksum, seal and digest of a log.")
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (a stable contract).")
@kek_option
def verify(directory: str, as_json: bool, kek_file: str | None) -> None:
    """Read every byte of a log and check every checksum, seal and digest; with
    --kek-file, authenticate every encrypted frame too (without, an encrypted log's
    checksums, seals and chain are still checked).

    Prints per segment "clean" or the first bad offset, then a summary. Exits 1 when a
    segment, META or a cursor file is corrupt; 2 when a segment needs a newer segwal (not
    corruption); a torn tail (what a crash leaves at the very end) is a warning. The exit
    code is the verdict even when stdout is closed early (verify | head -1).
    """
    with errors(directory), _spinner(f"verifying {directory}"):
        report = segwal.verify(directory, **key_options(kek_file))
    kinds = _problem_kinds(report)
    torn = [p for p in report.problems if p.kind == "torn_tail"]
    newer = [p for p in report.problems if p.kind == "unsupported"]
    corrupt = [p for p in report.problems if p.kind not in ("torn_tail", "unsupported")]
    try:
        _print_report(directory, report, kinds, torn, as_json)
    except BrokenPipeError:
        # The verdict is known already: a reader that stops reading (verify | head -1)
        # changes the output, never the exit code.
        quiet_stdout()
    for problem in torn:
        warn(
            f"torn tail: {problem}; a crash mid-write leaves this, and opening the log cuts "
            "it (records acknowledged as durable are never in one)"
        )
    if not corrupt and newer:
        raise Failure(
            f"{len(newer)} segment(s) need a newer segwal; the first: {newer[0]}",
            hint="upgrade segwal (pip install -U segwal) to verify this log; it is not corruption",
            exit_code=EXIT_USAGE,
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
