"""The ``demo`` command and its hidden writer child; the demo itself is ``segwal.cli.demo``."""

from __future__ import annotations

import sys

import click

from segwal.cli.common import Failure, errors
from segwal.cli.demo import run_child, run_demo


@click.command(short_help="SIGKILL a writer mid-write; check nothing acknowledged is lost.")
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
    with errors(directory or "the demo directory"):
        code = run_demo(directory, kills=kills, seed=seed)
    if code:
        raise Failure(
            "acknowledged records were lost or damaged; see the report above",
            hint="keep the log directory and report it as a segwal bug",
            exit_code=code,
        )


@click.command("_demo-child", hidden=True)
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.option("--seed", type=int, default=0)
@click.option("--max-seconds", type=float, default=60.0)
def demo_child(directory: str, seed: int, max_seconds: float) -> None:
    """The writer process of 'segwal demo' (internal)."""
    sys.exit(run_child(directory, seed=seed, max_seconds=max_seconds))
