"""``segwal migrate`` (a log rewritten into a new directory, e.g. compressed) and
``segwal import`` (a log made from the NDJSON ``segwal dump --json`` prints).

Both write a new log through the public API only, never in place: the destination must not
exist or be empty. LSNs, record types and timestamps are kept: the new log's clock is set
to each batch's timestamp before it is appended (timestamps never decrease, so the log
keeps them), and a source whose first LSN is above 1 is matched by appending empty
placeholder records that a checkpoint then deletes with their segment.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import sys
from collections.abc import Iterable, Iterator
from itertools import zip_longest
from typing import IO, Any, Final

import click

import segwal
from segwal.cli.common import (
    EXIT_CORRUPT,
    EXIT_USAGE,
    Failure,
    errors,
    kek_option,
    key_options,
)

BATCH_RECORDS: Final = 4096
BATCH_BYTES: Final = 4 << 20
MAX_PLACEHOLDERS: Final = 1 << 24  # a first LSN beyond this is refused, not padded
COMPRESSIONS: Final = ("zstd", "lz4", "none")
Item = tuple[int, int, int, bytes]  # lsn, type, timestamp_us, payload


class _Clock:
    """The new log's clock: the timestamp of the batch being copied."""

    def __init__(self, now_us: int) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us


def _target(directory: str) -> None:
    if os.path.exists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
        raise Failure(
            f"{directory} exists and is not an empty directory",
            hint="give a new directory: migrate and import never write into a log in place",
            exit_code=EXIT_USAGE,
        )


def _batches(items: Iterable[Item]) -> Iterator[list[Item]]:
    """Runs of records with consecutive LSNs, one type and one timestamp, bounded in count
    and bytes."""
    batch: list[Item] = []
    size = 0
    for item in items:
        if batch and (
            item[1] != batch[0][1]
            or item[2] != batch[0][2]
            or item[0] != batch[-1][0] + 1  # a gap: the next batch's check names it
            or len(batch) >= BATCH_RECORDS
            or size + len(item[3]) > BATCH_BYTES
        ):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += len(item[3])
    if batch:
        yield batch


def _write(
    directory: str,
    items: Iterable[Item],
    compression: str,
    level: int | None,
    encrypt: str | None = None,
    dictionary: str | None = None,
) -> int:
    """Append ``items`` (consecutive LSNs) to a new log (encrypted under the KEK in the file
    ``encrypt``, if given; zstd frames with the trained dictionary in the file
    ``dictionary``, if given); returns the number of records."""
    clock = _Clock(0)
    options: dict[str, Any] = {"compression": None if compression == "none" else compression}
    options.update(key_options(encrypt))
    if level is not None:
        options["compression_level"] = level
    if dictionary is not None:
        # Checked by segwal.open (zstd only, not with encryption, a valid dictionary file):
        # its ConfigError becomes the usage error before anything is written.
        options["compression_dictionary"] = dictionary
    count = 0
    wal: segwal.Wal | None = None
    try:
        for batch in _batches(items):
            first_lsn, record_type, stamp = batch[0][0], batch[0][1], batch[0][2]
            clock.now_us = stamp
            if wal is None:
                wal = segwal.open(directory, sync="never", clock=clock, **options)
                _start_at(wal, first_lsn)
            if first_lsn != wal.next_lsn:
                raise Failure(
                    f"LSN {first_lsn} does not follow LSN {wal.next_lsn - 1}",
                    hint="records must have consecutive LSNs, as 'segwal dump --json' prints",
                    exit_code=EXIT_USAGE,
                )
            wal.append_batch([item[3] for item in batch], type=record_type)
            count += len(batch)
        if wal is None:
            wal = segwal.open(directory, sync="never", clock=clock, **options)
        wal.sync()
    finally:
        if wal is not None:
            wal.close()
    return count


def _start_at(wal: segwal.Wal, first_lsn: int) -> None:
    """Make a new log's next LSN ``first_lsn``: empty placeholders, then a checkpoint that
    deletes their (sealed) segment."""
    if first_lsn <= 1:
        return
    if first_lsn - 1 > MAX_PLACEHOLDERS:
        raise Failure(
            f"the first LSN {first_lsn} is too far from 1 to reproduce",
            exit_code=EXIT_USAGE,
        )
    while wal.next_lsn < first_lsn:
        wal.append_batch([b""] * min(65536, first_lsn - wal.next_lsn))
    wal.rotate()
    wal.truncate_before(first_lsn)


def _compare(source: Iterable[Item], directory: str, encrypt: str | None = None) -> None:
    """Read the new log back and require the same records (verify first: checksums, chain,
    and every encrypted frame authenticated)."""
    report = segwal.verify(directory, **key_options(encrypt))
    if not report.ok:
        raise Failure(f"the new log in {directory} does not verify", exit_code=EXIT_CORRUPT)
    with segwal.open(directory, readonly=True, **key_options(encrypt)) as wal:
        copied = ((r.lsn, r.type, r.timestamp_us, r.payload) for r in wal.replay())
        for want, got in zip_longest(source, copied):
            if want != got:
                lsn = (want or got or (0,))[0]
                raise Failure(
                    f"LSN {lsn} reads back differently from {directory}",
                    exit_code=EXIT_CORRUPT,
                )


def _records(wal: segwal.Wal) -> Iterator[Item]:
    return ((r.lsn, r.type, r.timestamp_us, r.payload) for r in wal.replay())


def _compression_options(f: Any) -> Any:
    f = click.option(
        "--compression-dictionary",
        "dictionary",
        type=click.Path(dir_okay=False, exists=True),
        help="With --compression zstd: a trained zstd dictionary file ('segwal dict train', "
        "or a SOURCE's *.zdict) stored in the new log and used for every frame; it helps "
        "logs of single small appends (README, 'Small records').",
    )(f)
    f = click.option(
        "--compression-level",
        "level",
        type=int,
        help="The codec's level (zstd -7..22, default 3; lz4 0..12, default 0).",
    )(f)
    return click.option(
        "--compression",
        type=click.Choice(COMPRESSIONS),
        default="none",
        show_default=True,
        help="Compress the new log's frames (needs segwal[zstd] or segwal[lz4]).",
    )(f)


def _encrypt_option(f: Any) -> Any:
    return click.option(
        "--encrypt-kek-file",
        "encrypt",
        type=click.Path(dir_okay=False),
        help="Encrypt the new log under the key-encryption key in this file (32 raw bytes, "
        "64 hex digits or base64; see docs/SECURITY.md).",
    )(f)


@click.command(short_help="Rewrite a log into a new directory (e.g. compressed).")
@click.argument("source", type=click.Path(file_okay=False, exists=True, path_type=str))
@click.argument("target", type=click.Path(path_type=str))
@_compression_options
@_encrypt_option
@kek_option
def migrate(
    source: str,
    target: str,
    compression: str,
    level: int | None,
    dictionary: str | None,
    encrypt: str | None,
    kek_file: str | None,
) -> None:
    """Copy every record of SOURCE into a new log in TARGET, then verify it.

    LSNs, types and timestamps are kept; the new log's segments are written with this
    segwal's format (version 2 when --compression or --encrypt-kek-file is set). SOURCE is
    only read (--kek-file: its key, when it is encrypted); TARGET must not exist or be
    empty. Holds and cursors are not copied; neither are SOURCE's keys: an encrypted TARGET
    gets log keys of its own under the KEK of --encrypt-kek-file.
    """
    _target(target)
    created = not os.path.exists(target)
    try:
        with errors(source), segwal.open(source, readonly=True, **key_options(kek_file)) as src:
            with errors(target):
                count = _write(target, _records(src), compression, level, encrypt, dictionary)
            with errors(target):
                _compare(_records(src), target, encrypt)
    except BaseException:
        if created:
            shutil.rmtree(target, ignore_errors=True)
        raise
    click.echo(f"migrated {count} records from {source} to {target} (verified)")


def _parse(stream: IO[str]) -> Iterator[Item]:
    """NDJSON lines as ``segwal dump --json`` prints them; errors name the line."""
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            lsn, record_type, stamp = obj["lsn"], obj["type"], obj["timestamp_us"]
            payload = base64.b64decode(obj["payload"], validate=True)
            for name, value in (("lsn", lsn), ("type", record_type), ("timestamp_us", stamp)):
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"{name} must be a non-negative integer")
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise Failure(
                f"line {number}: not a record of 'segwal dump --json' ({detail})",
                hint='each line is {"lsn", "type", "timestamp_us", "payload" (base64)}',
                exit_code=EXIT_USAGE,
            ) from None
        yield lsn, record_type, stamp, payload


@click.command("import", short_help="Make a new log from NDJSON (the output of dump --json).")
@click.argument("target", type=click.Path(path_type=str))
@click.option(
    "--ndjson",
    "ndjson",
    type=click.File("r"),
    required=True,
    help="The records, one JSON object a line, as 'segwal dump --json' prints ('-': stdin).",
)
@_compression_options
@_encrypt_option
def import_(
    target: str,
    ndjson: IO[str],
    compression: str,
    level: int | None,
    dictionary: str | None,
    encrypt: str | None,
) -> None:
    """Append the records of an NDJSON file to a new log in TARGET, keeping LSNs, types
    and timestamps. TARGET must not exist or be empty; on any error it is removed."""
    _target(target)
    created = not os.path.exists(target)
    try:
        with errors(target):
            count = _write(target, _parse(ndjson), compression, level, encrypt, dictionary)
    except BaseException:
        if created:
            shutil.rmtree(target, ignore_errors=True)
        elif os.path.isdir(target):
            for name in os.listdir(target):  # it was empty: leave it empty
                path = os.path.join(target, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
        raise
    click.echo(f"imported {count} records into {target}", file=sys.stderr)
