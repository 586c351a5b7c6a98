"""``segwal keys``: list an encrypted log's keys, rotate them (a new key-encryption key, a new
log key for new segments), and delete old ones (crypto-shredding). Changes need ``--yes``.

Key-encryption keys are read from files (``--kek-file``: 32 raw bytes, 64 hex digits or
base64), never from the command line, where other users could read them in the process list.
"""

from __future__ import annotations

from typing import Any

import click

import segwal
from segwal.cli.common import EXIT_USAGE, Failure, emit_json, errors, render_table, rfc3339

KEK_HELP = "File holding the key-encryption key (32 raw bytes, 64 hex digits or base64)."
_CIPHERS = click.Choice(["aes-256-gcm", "chacha20-poly1305"])


def _rows(infos: tuple[segwal.KeyInfo, ...]) -> list[dict[str, Any]]:
    return [
        {
            "key_id": k.key_id,
            "cipher": k.cipher,
            "created": rfc3339(k.created_us),
            "current": k.current,
        }
        for k in infos
    ]


def _show(infos: tuple[segwal.KeyInfo, ...], as_json: bool, directory: str) -> None:
    rows = _rows(infos)
    if as_json:
        emit_json({"directory": directory, "keys": rows})
        return
    table = [["KEY ID", "CIPHER", "CREATED", "CURRENT"]]
    table += [
        [str(r["key_id"]), r["cipher"], r["created"], "yes" if r["current"] else ""] for r in rows
    ]
    for line in render_table(table, right={0}):
        click.echo(line)


def _need_yes(command: str) -> Failure:
    return Failure(
        "nothing changed: changing KEYS needs --yes",
        hint=f"run '{command} --yes' to do it",
        exit_code=EXIT_USAGE,
    )


@click.group(short_help="List, rotate and delete an encrypted log's keys.")
def keys() -> None:
    """An encrypted log's keys, in its KEYS file: list them (no key needed), rewrap them under
    a new key-encryption key, add a log key for new segments, or delete old ones.

    Changes need --yes and a closed log (no writer). Deleting a key makes the segments it
    encrypted unreadable for good (crypto-shredding). See docs/SECURITY.md.
    """


@keys.command("list", short_help="List the log keys (ids, ciphers, the current one).")
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (a stable contract).")
def list_command(directory: str, as_json: bool) -> None:
    """List the log keys of the encrypted log in DIRECTORY; needs no key."""
    with errors(directory):
        infos = segwal.list_keys(directory)
    _show(infos, as_json, directory)


@keys.command(short_help="Rewrap under a new KEK and/or add a new log key (needs --yes).")
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.option("--kek-file", required=True, type=click.Path(dir_okay=False), help=KEK_HELP)
@click.option(
    "--new-kek-file",
    type=click.Path(dir_okay=False),
    help="Rewrap every log key under the key-encryption key in this file; afterwards the old "
    "one opens nothing.",
)
@click.option(
    "--new-log-key", is_flag=True, help="Add a log key; new segments are encrypted with it."
)
@click.option("--cipher", type=_CIPHERS, help="The new log key's cipher (default: the current).")
@click.option("--yes", "-y", is_flag=True, help="Do it. Without --yes nothing changes (exit 2).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (a stable contract).")
def rotate(
    directory: str,
    kek_file: str,
    new_kek_file: str | None,
    new_log_key: bool,
    cipher: str | None,
    yes: bool,
    as_json: bool,
) -> None:
    """Rotate the keys of the encrypted log in DIRECTORY. No segment is touched; KEYS is
    replaced atomically."""
    if new_kek_file is None and not new_log_key:
        raise Failure(
            "nothing to rotate",
            hint="add --new-kek-file, --new-log-key or both",
            exit_code=EXIT_USAGE,
        )
    if not yes:
        raise _need_yes(f"segwal keys rotate {directory} ...")
    with errors(directory):
        infos = segwal.rotate_keys(
            directory,
            segwal.KeyFile(kek_file),
            new_kek=None if new_kek_file is None else segwal.KeyFile(new_kek_file),
            new_log_key=new_log_key,
            cipher=cipher,
        )
    _show(infos, as_json, directory)


@keys.command(short_help="Delete log keys: their segments become unreadable (needs --yes).")
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.option(
    "--key-id",
    "key_ids",
    type=click.IntRange(min=1),
    multiple=True,
    required=True,
    help="A log key to delete (repeatable); never the current one.",
)
@click.option("--yes", "-y", is_flag=True, help="Do it. Without --yes nothing changes (exit 2).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (a stable contract).")
def delete(directory: str, key_ids: tuple[int, ...], yes: bool, as_json: bool) -> None:
    """Crypto-shredding: delete log keys of the encrypted log in DIRECTORY. Every segment they
    encrypted becomes unreadable for good, here and in any copy whose KEYS lacks them."""
    if not yes:
        raise _need_yes(f"segwal keys delete {directory} ...")
    with errors(directory):
        infos = segwal.delete_keys(directory, key_ids)
    _show(infos, as_json, directory)
