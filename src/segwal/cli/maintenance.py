"""The commands that change a log: ``truncate`` and ``prune`` delete records (a plan
first, nothing changed without --yes), ``holds`` lists, sets and releases holds."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable
from typing import Any

import click

import segwal
from segwal.cli.common import (
    DURATION,
    EXIT_USAGE,
    SIZE,
    Failure,
    emit_json,
    errors,
    kek_option,
    key_options,
    lsn_range,
    render_table,
    rfc3339_or_none,
    storage_failure,
    warn,
)

_SEGMENT_FILE = re.compile(r"^\d{20}\.wal$")
CURSOR_PREFIX = "cursor:"  # how holds() names the hold of a consumer cursor


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
        raise storage_failure(exc, directory) from exc
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


def _truncate_rows(plan: segwal.TruncatePlan) -> list[dict[str, Any]]:
    """The plan's action on each segment (delete, rewrite or keep), for the table and JSON."""
    return [
        {
            "file": os.path.basename(a.segment.path),
            "path": a.segment.path,
            "first_lsn": a.segment.first_lsn,
            "last_lsn": a.segment.last_lsn,
            "size_bytes": a.segment.size_bytes,
            "sealed": a.segment.sealed,
            "action": a.action,
        }
        for a in plan.segments
    ]


@click.command(short_help="Drop the records before or after an LSN (needs --yes).")
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
@kek_option
def truncate(
    directory: str,
    before: int | None,
    after: int | None,
    dry_run: bool,
    yes: bool,
    as_json: bool,
    kek_file: str | None,
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
    with errors(directory):
        _require_log(directory)
        result: segwal.TruncateResult | None = None
        # The log plans (and refuses) the truncation itself: the dry run shows exactly what
        # the real run does, holds and cursors included.
        with segwal.open(directory, readonly=not apply, **key_options(kek_file)) as wal:
            plan = wal.truncate_plan(before=before, after=after)
            if apply:
                if before is not None:
                    result = wal.truncate_before(before)
                else:
                    result = wal.truncate_after(lsn)
    first, last = plan.first_lsn, plan.last_lsn
    rows = _truncate_rows(plan)
    if result is not None:
        new_first, new_last = result.first_lsn, result.last_lsn
        count, reclaimed = result.segments_deleted, result.bytes_reclaimed
    else:
        new_first, new_last = plan.new_first_lsn, plan.new_last_lsn
        count, reclaimed = len(plan.deleted), plan.bytes_reclaimed
    if as_json:
        emit_json(
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
            f"truncate {verb} LSN {lsn}: LSNs {lsn_range(first, last)} -> "
            f"{lsn_range(new_first, new_last)}"
        )
        table = [["ACTION", "FILE", "LSNS", "SIZE"]]
        for row in rows:
            if row["action"] != "keep":
                table.append(
                    [
                        row["action"],
                        row["file"],
                        lsn_range(row["first_lsn"], row["last_lsn"]),
                        _size_text(row["size_bytes"]),
                    ]
                )
        if len(table) > 1:
            for line in render_table(table, right={3}):
                click.echo(f"  {line}")
        rewrites = [row["file"] for row in rows if row["action"] == "rewrite"]
        cut = f" and cut {rewrites[0]} after LSN {lsn}" if rewrites else ""
        if apply:
            click.echo(
                f"deleted {count} segments{cut}, {reclaimed} bytes reclaimed; "
                f"the log holds LSNs {lsn_range(new_first, new_last)}"
            )
        else:
            click.echo(
                f"would delete {count} segments ({reclaimed} bytes){cut}; "
                f"the log would hold LSNs {lsn_range(new_first, new_last)}"
            )
    if not apply and not dry_run and plan.changes:
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
        "newest_record": rfc3339_or_none(s.max_timestamp_us),
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


@click.command(short_help="Delete old segments by age or total size (needs --yes).")
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
@kek_option
def prune(
    directory: str,
    max_age: float | None,
    max_bytes: int | None,
    min_segments: int,
    dry_run: bool,
    yes: bool,
    as_json: bool,
    kek_file: str | None,
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
    with errors(directory):
        _require_log(directory)
        if apply:
            with segwal.open(directory, **options, **key_options(kek_file)) as wal:
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
        emit_json(
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
                    lsn_range(s.first_lsn, s.last_lsn),
                    _size_text(s.size_bytes),
                    rfc3339_or_none(s.max_timestamp_us) or "-",
                    _why(d),
                ]
            )
        if len(table) > 1:
            for line in render_table(table, right={3}):
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


@click.command(short_help="List holds; set or release one (no --yes needed but for a cursor).")
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.option(
    "--set",
    "set_hold",
    nargs=2,
    type=(str, click.IntRange(min=0)),
    metavar="NAME LSN",
    help="Keep every record at or above LSN until released (NAME: 1-128 letters, digits or ._:@-).",
)
@click.option(
    "--release",
    "release",
    metavar="NAME",
    help="Drop the hold NAME; cursor:NAME deletes the consumer cursor NAME (needs --yes).",
)
@click.option(
    "--yes", "-y", is_flag=True, help="Confirm deleting a consumer cursor (--release cursor:NAME)."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (a stable contract).")
@kek_option
def holds(
    directory: str,
    set_hold: tuple[str, int] | None,
    release: str | None,
    yes: bool,
    as_json: bool,
    kek_file: str | None,
) -> None:
    """List what keeps records, or set (--set NAME LSN) or release (--release NAME) a hold.

    A hold keeps every record at or above its LSN: no retention rule deletes it and
    'truncate --before' past it is refused. Holds survive restarts. A consumer cursor holds
    its records too and is listed as cursor:NAME at its position. Setting or releasing a
    hold deletes no record, so neither needs --yes; releasing cursor:NAME deletes that
    consumer's position, so it does. Both open the log as its writer.
    """
    if set_hold is not None and release is not None:
        raise click.UsageError("give --set or --release, not both")
    if release is not None and release.startswith(CURSOR_PREFIX) and not yes:
        raise _need_yes(
            f"releasing {release!r} deletes the position of consumer cursor "
            f"{release[len(CURSOR_PREFIX) :]!r}; it",
            shlex.join(["segwal", "holds", directory, "--release", release]),
        )
    action = "set" if set_hold is not None else "release" if release is not None else "list"
    changed = False
    with errors(directory):
        if action == "list":
            with segwal.open(directory, readonly=True) as wal:
                found = wal.holds()
                first, last = wal.first_lsn, wal.last_lsn
        else:
            _require_log(directory)
            with segwal.open(directory, **key_options(kek_file)) as wal:
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
        emit_json(data)
    else:
        if set_hold is not None:
            click.echo(f"hold {set_hold[0]!r} set at LSN {set_hold[1]}")
        elif release is not None and changed:
            click.echo(f"hold {release!r} released")
        if ordered:
            rows = [["NAME", "LSN"]] + [[name, str(lsn)] for name, lsn in ordered]
            for line in render_table(rows, right={1}):
                click.echo(line)
        else:
            click.echo("no holds")
    if release is not None and not changed:
        warn(f"{directory} has no hold named {release!r}; nothing changed")
