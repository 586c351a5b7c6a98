"""The ``segwal`` command: inspect, verify and dump a log, truncate and prune it, manage
holds, and the crash demo.

Uses only the public API of ``segwal``. Data goes to stdout; logs, progress and errors to
stderr. Exit codes: 0 ok, 1 corruption or verification failure, 2 usage (also: a change that
needs ``--yes`` and did not get it, an LSN out of range, a hold in the way, a log written by
a newer segwal), 3 I/O error, 141 stdout closed early (a broken pipe, as ``segwal dump |
head`` gives; ``verify`` exits with its verdict instead, since that is computed first).
Commands that delete records (truncate, prune) print their plan and change nothing unless
given ``--yes``; ``--dry-run`` only prints the plan.
``--json`` output is a contract: fields may be added, never removed or retyped; LSNs are
integers, times RFC 3339 in UTC, binary data base64, empty lists ``[]``.
"""

from __future__ import annotations

import click

import segwal
from segwal.cli.archive import archive, mirror, restore
from segwal.cli.common import (
    DURATION,
    EXIT_CORRUPT,
    EXIT_IO,
    EXIT_OK,
    EXIT_PIPE,
    EXIT_USAGE,
    SIZE,
    Failure,
    parse_duration,
    parse_size,
    quiet_stdout,
    rfc3339,
)
from segwal.cli.democmd import demo, demo_child
from segwal.cli.dictionaries import dict_
from segwal.cli.inspection import info, verify
from segwal.cli.keys import keys
from segwal.cli.maintenance import holds, prune, truncate
from segwal.cli.migrate import import_, migrate
from segwal.cli.records import dump, tail
from segwal.cli.stats import stats

__all__ = [
    "DURATION",
    "EXIT_CORRUPT",
    "EXIT_IO",
    "EXIT_OK",
    "EXIT_PIPE",
    "EXIT_USAGE",
    "SIZE",
    "Failure",
    "archive",
    "demo",
    "demo_child",
    "dict_",
    "dump",
    "holds",
    "info",
    "keys",
    "main",
    "mirror",
    "parse_duration",
    "parse_size",
    "prune",
    "restore",
    "rfc3339",
    "stats",
    "tail",
    "truncate",
    "verify",
]


class _Commands(click.Group):
    """The command group; ``bench`` (a suite of ~10 modules) is imported only when used,
    so it adds nothing to the start of every other command."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), "bench"])

    def invoke(self, ctx: click.Context) -> object:
        # A reader that stops reading (segwal dump | head) is not corruption: click alone
        # would exit 1 on the broken pipe. Exit quietly with 141, as a C tool killed by
        # SIGPIPE does (a shell reports 128 + 13).
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            quiet_stdout()
            ctx.exit(EXIT_PIPE)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "bench":
            from segwal.bench import bench

            return bench
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    segwal.__version__,
    "-V",
    "--version",
    prog_name="segwal",
    # Which record decoder and single-record encoder this process runs: a bug report needs
    # it, and so does a speed one.
    message=f"%(prog)s %(version)s (decoder: {segwal.DECODER}, "
    f"{'compiled' if segwal.DECODER == 'c' else 'pure Python'}; encoder: {segwal.ENCODER})",
)
def main() -> None:
    """Inspect, check and trim segwal write-ahead logs, and watch one survive SIGKILL.

    info, stats, verify, dump and 'holds' (listing) are read-only. truncate and prune delete
    records: they show their plan and change nothing without --yes. 'holds --set' and
    'holds --release' change only holds, 'keys' lists and (with --yes) rotates an encrypted
    log's keys, 'dict' trains, lists and (with --yes) prunes compression dictionaries, and
    'demo' writes its own log. migrate and import write a new log in a new
    directory.

    Exit codes: 0 ok, 1 corruption or verification failure, 2 usage error (also a change
    that needs --yes, an LSN out of range, a hold in the way, a log of a newer segwal),
    3 I/O error, 141 stdout closed early (verify: its verdict).
    """


_COMMANDS = (info, stats, verify, dump, tail, truncate, prune, holds, keys, dict_, migrate, import_)
for _command in (*_COMMANDS, restore, mirror, archive, demo, demo_child):
    main.add_command(_command)
