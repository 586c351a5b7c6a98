"""``segwal bench``: the click command that runs the suite and writes the report.

The report goes to ``--out`` (and stdout), progress and notes to stderr. Only segwal's
public API and this package are used; lmdb, rocksdict, rich and matplotlib are imported
when needed, and a missing one is skipped with a one-line note.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from typing import Any

import click

from segwal.bench.cases import build_cases
from segwal.bench.report import plot, render, write_json, write_text
from segwal.bench.runner import (
    Runner,
    applies,
    available_peers,
    make_progress,
    run_all,
    summarize_all,
)
from segwal.bench.system import CacheDropper, in_memory, loadavg, machine

DEFAULT_OUT = "BENCHMARKS.md"
DEFAULT_PLOT = os.path.join("benchmarks", "durable_threads.png")
DEFAULT_REPEAT = 5
QUICK_REPEAT = 2


def _note(message: str) -> None:
    click.echo(f"segwal bench: {message}", err=True)


def _parent_dir(option: str | None) -> str:
    if option:
        os.makedirs(option, exist_ok=True)
        return option
    return "/var/tmp" if os.path.isdir("/var/tmp") else tempfile.gettempdir()


@click.command("bench")
@click.option(
    "--out",
    default=DEFAULT_OUT,
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Markdown report to write (also printed to stdout).",
)
@click.option(
    "--plot",
    "plot_path",
    default=DEFAULT_PLOT,
    show_default=True,
    type=click.Path(dir_okay=False),
    help="PNG of durable throughput against thread count (needs matplotlib).",
)
@click.option("--quick", is_flag=True, help="Small sizes, a smoke test (< 30 s).")
@click.option("--only", metavar="REGEX", help="Run the workloads whose name matches REGEX.")
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    metavar="N",
    help=f"Interleaved repetitions per workload and contender "
    f"[default: {DEFAULT_REPEAT}, {QUICK_REPEAT} with --quick].",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    help="Where the logs go: a fresh segwal-bench-* directory inside it, removed at the end "
    "[default: /var/tmp]. Use a real disk, not tmpfs.",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write JSON.")
@click.option("--keep", is_flag=True, help="Keep the benchmark files.")
@click.option("--list", "list_only", is_flag=True, help="List the workloads and exit.")
@click.option(
    "--codecs",
    "codec_rows",
    is_flag=True,
    help="Run the compression rows (zstd, lz4 against plain segwal) instead of the suite.",
)
def bench(
    out: str,
    plot_path: str,
    quick: bool,
    only: str | None,
    repeat: int | None,
    directory: str | None,
    json_path: str | None,
    keep: bool,
    list_only: bool,
    codec_rows: bool = False,
) -> None:
    """Benchmark segwal against sqlite3, lmdb, RocksDB and raw write+fdatasync, side by side.

    Every workload runs every contender once per repetition, in rotating order; the report
    shows medians and segwal's paired ratio to each peer.
    """
    if codec_rows:
        _run_codecs(out, quick, repeat, directory)
        return
    every = build_cases(quick)
    if list_only:
        for case in every:
            click.echo(f"{case.name:18} {case.description}")
        return
    try:
        pattern = re.compile(only) if only else None
    except re.error as exc:
        raise click.BadParameter(str(exc), param_hint="--only") from exc
    cases = [c for c in every if pattern is None or pattern.search(c.name)]
    if not cases:
        raise click.UsageError(f"--only {only!r} matches no workload (see --list)")
    repeat = repeat or (QUICK_REPEAT if quick else DEFAULT_REPEAT)

    peers, notes = available_peers()
    for note in notes:
        _note(note)
    base = tempfile.mkdtemp(prefix="segwal-bench-", dir=_parent_dir(directory))
    libraries: dict[str, str] = {}
    for peer in peers:
        libraries |= peer.versions()
    info = machine(base, libraries)
    if in_memory(info["filesystem"]):
        _note(f"WARNING: {base} is on {info['filesystem']['fstype']}: durable rows mean nothing")

    dropper = CacheDropper()
    total = sum(1 for c in cases for p in peers if applies(p, c)) * repeat
    progress = make_progress(total)
    started = time.perf_counter()
    try:
        samples = run_all(Runner(base, dropper), cases, peers, repeat, progress)
    finally:
        progress.close()
        if keep:
            _note(f"files kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    elapsed = time.perf_counter() - started
    info["loadavg_end"] = loadavg()

    rows = summarize_all(cases, peers, samples)
    title = (
        f"segwal bench: durable 100 B appends, {info['nproc']} CPUs, "
        f"{info['filesystem']['fstype']}, median of {repeat}"
    )
    plot_note = plot(rows, plot_path, title)
    if plot_note:
        notes.append(plot_note)
        _note(plot_note)
    doc: dict[str, Any] = {
        "machine": info,
        "quick": quick,
        "repeat": repeat,
        "only": only,
        "elapsed_s": elapsed,
        "cache_drop": dropper.describe(),
        "cache_drop_method": dropper.method,
        "notes": notes,
        "contenders": [p.name for p in peers],
        "sync_notes": {p.name: p.sync_note for p in peers},
        "cases": [vars(c) for c in cases],
        "results": rows,
        "plot": None if plot_note else plot_path,
    }
    plot_ref = None
    if not plot_note:
        plot_ref = os.path.relpath(plot_path, os.path.dirname(os.path.abspath(out)))
    text = render(doc, cases, plot_ref)
    write_text(out, text)
    click.echo(text)
    if json_path:
        write_json(json_path, doc)
    _note(f"report written to {out}" + (f", JSON to {json_path}" if json_path else ""))


def _run_codecs(out: str, quick: bool, repeat: int | None, directory: str | None) -> None:
    """The compression rows alone: a table to --out and stdout."""
    from segwal.bench import codecs

    records = {100: 20_000, 1024: 5_000} if quick else {100: 200_000, 1024: 50_000}
    repeat = repeat or (QUICK_REPEAT if quick else DEFAULT_REPEAT)
    base = tempfile.mkdtemp(prefix="segwal-bench-", dir=_parent_dir(directory))
    try:
        results = codecs.run(base, records, repeat, _note, codecs.available(_note))
        text = codecs.render(results, repeat)
        # Single appends with a trained dictionary (issue 11): rows of their own module.
        if "zstd" in codecs.available(lambda _: None):
            from segwal.bench import dictrows

            single = dictrows.run_single(base, records[100] // 4, repeat)
            text += "\n" + dictrows.render_single(single, repeat)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    with open(out, "w", encoding="utf-8") as handle:
        handle.write(text)
    click.echo(text)
