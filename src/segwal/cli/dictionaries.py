"""``segwal dict``: train a zstd compression dictionary from a log's records (or a file of
samples), list the dictionaries a log holds, and prune those no segment names.

A dictionary helps single small records (one record a frame); open the log with
``segwal.open(path, compression="zstd", compression_dictionary=FILE)`` to use one: it is
stored in the log then, and named by every segment created after that.
"""

from __future__ import annotations

from typing import IO, Any

import click

import segwal
from segwal.cli.common import EXIT_USAGE, Failure, emit_json, errors, render_table


@click.group("dict", short_help="Train, list and prune compression dictionaries.")
def dict_() -> None:
    """Trained zstd dictionaries for logs of small records. 'train' writes one to a file;
    a writer opened with compression="zstd" and compression_dictionary=FILE stores it in the
    log. 'list' shows a log's dictionaries and the segments naming each; 'prune' deletes
    those no segment names (needs --yes and a closed log). See docs/FORMAT.md."""


@dict_.command(short_help="Train a dictionary on a log's newest records or a samples file.")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=str))
@click.option("--samples", default=2000, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--samples-file",
    type=click.File("rb"),
    help="Train on this file's lines (one sample a line) instead of a log's records.",
)
@click.option("--size", default=16384, show_default=True, type=click.IntRange(256, 1 << 20))
@click.option("--out", required=True, type=click.File("wb", lazy=True, atomic=True))
def train(
    directory: str | None, samples: int, samples_file: IO[bytes] | None, size: int, out: IO[bytes]
) -> None:
    """Train a dictionary of at most --size bytes on the newest --samples records of the log
    in DIRECTORY (or the lines of --samples-file) and write it to --out."""
    if (directory is None) == (samples_file is None):
        raise Failure(
            "give a log DIRECTORY or --samples-file, one of them",
            hint="segwal dict train LOG --out FILE",
            exit_code=EXIT_USAGE,
        )
    if samples_file is not None:
        data = [line for line in samples_file.read().splitlines() if line][-samples:]
    else:
        assert directory is not None
        with errors(directory), segwal.open(directory, readonly=True) as wal:
            start = max(wal.first_lsn, wal.last_lsn - samples + 1)
            data = [record.payload for record in wal.replay(start)]
    if not data:
        raise Failure("no samples to train on", exit_code=EXIT_USAGE)
    try:
        content = segwal.train_dictionary(data, size)
    except (ValueError, segwal.UnsupportedFormatError) as exc:
        raise Failure(str(exc), hint="give more or larger samples", exit_code=EXIT_USAGE) from exc
    out.write(content)  # click writes a temporary file and renames it over --out on exit
    name = getattr(out, "name", "--out")
    click.echo(f"wrote a {len(content)}-byte dictionary trained on {len(data)} samples to {name}")


@dict_.command("list", short_help="List a log's dictionaries and the segments naming each.")
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (a stable contract).")
def list_command(directory: str, as_json: bool) -> None:
    """List the compression dictionaries of the log in DIRECTORY."""
    with errors(directory):
        infos = segwal.list_dictionaries(directory)
    rows: list[dict[str, Any]] = [
        {
            "id": i.dict_id,  # as the segment header's u32 names it (bytes 116..120)
            "digest": i.digest,
            "size": i.size,
            "path": i.path,
            "segments": list(i.segments),
        }
        for i in infos
    ]
    if as_json:
        emit_json({"directory": directory, "dictionaries": rows})
        return
    table = [["ID", "SIZE", "SEGMENTS", "DIGEST"]]
    table += [
        [f"{r['id']:#010x}", str(r["size"]), str(len(r["segments"])), r["digest"]] for r in rows
    ]
    for line in render_table(table, right={1, 2}):
        click.echo(line)


@dict_.command(short_help="Delete dictionaries no segment names (needs --yes).")
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.option(
    "--keep",
    "keep",
    multiple=True,
    type=click.File("rb"),
    help="A dictionary file to keep anyway (the one the next writer will use); repeatable.",
)
@click.option("--yes", "-y", is_flag=True, help="Do it. Without --yes nothing changes (exit 2).")
def prune(directory: str, keep: tuple[IO[bytes], ...], yes: bool) -> None:
    """Delete the dictionaries of the closed log in DIRECTORY that no segment names."""
    with errors(directory):
        found = segwal.prune_dictionaries(directory, keep=[f.read() for f in keep], dry_run=not yes)
    verb = "deleted" if yes else "would delete"
    for path in found:
        click.echo(f"{verb} {path}")
    if not found:
        click.echo("no dictionary to delete: every one is named by a segment or kept")
    if not yes and found:
        raise Failure(
            "nothing changed: deleting dictionaries needs --yes",
            hint=f"run 'segwal dict prune {directory} --yes' to do it",
            exit_code=EXIT_USAGE,
        )
