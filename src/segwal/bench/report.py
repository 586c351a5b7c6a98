"""The Markdown report (one table per workload group), the JSON document and the plot."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from segwal.bench.cases import GROUPS, Case
from segwal.bench.goals import goals_table
from segwal.bench.peers import INSTALL_HINT
from segwal.bench.runner import human
from segwal.bench.system import in_memory

# What each group's table says about how the contenders were run.
GROUP_NOTES: dict[str, str] = {
    "buffered": (
        'No per-record sync: segwal `sync="never"`, sqlite3 `synchronous=OFF` (autocommit '
        "per record; `BEGIN; executemany; COMMIT` per batch), lmdb `sync=False, "
        "metasync=False` (one transaction per record or batch, `putmulti(append=True)`), "
        "rocksdict `WriteOptions(sync=False)` with its WAL on (`put`, `WriteBatch`), raw "
        "`os.write`. One barrier at the end, inside the clock: `wal.sync()`, `fdatasync` of "
        "the SQLite files, `env.sync(True)`, `flush_wal(sync=True)`, `fdatasync`."
    ),
    "durable": (
        'Each append is durable when it returns: segwal `sync="always"`, sqlite3 '
        "`synchronous=FULL` autocommit, lmdb `sync=True`, rocksdict `WriteOptions(sync=True)`, "
        "raw `os.write` + `os.fdatasync` per record. Bounded by the disk's flush latency."
    ),
    "group": (
        'N threads append 100 B durably into one log: segwal one `Wal(sync="always")` '
        "shared by the threads (its group commit shares each fdatasync); sqlite3 "
        "`synchronous=FULL`, one connection per thread behind a Python lock; lmdb `sync=True` "
        "(its writers serialise); rocksdict `sync=True` (RocksDB's own write groups); raw: "
        "a bare leader/follower group commit in Python over one fd. The `aio-Ntasks` rows "
        "(segwal only): N asyncio tasks `await wal.append` through `segwal.aio`, whose one "
        "writer thread writes everything waiting with one write and one fdatasync."
    ),
    "replay": (
        "Every record in order, into the same counting loop: segwal `wal.replay()`, sqlite3 "
        "`SELECT ... ORDER BY lsn`, lmdb cursor, rocksdict `items()`, raw a parse loop over "
        "1 MiB reads. Warm: the data is in the page cache and the open is not timed (see "
        "the details). Cold: the page cache is dropped first and open + scan are timed."
    ),
    "read": (
        "Random point reads, warm: segwal `wal.read(lsn)`, sqlite3 `SELECT ... WHERE lsn=?`, "
        "lmdb `txn.get`, rocksdict `db[key]`, raw `os.pread` through an in-memory offset "
        "index. The same random LSNs for everyone; 100 reads of warm-up untimed. The logs "
        "are the replay workload's, written with batches of 1000 records."
    ),
    "open": (
        "`segwal.open(path)` + `close()` of a log of sealed segments built once with "
        "`rotate()`; the peers have no equivalent."
    ),
}
RATE_GROUPS_WITH_MB = {"buffered", "replay"}


def cell(row: dict[str, Any] | None, group: str) -> str:
    if row is None:
        return "-"
    if group == "open":
        return f"{row['ms_per_open']:.1f} ms"
    rate = f"{human(row['median_rps'])}/s"
    if group in RATE_GROUPS_WITH_MB:
        rate += f" ({row['median_mbps']:.0f} MB/s)"
    return rate + (" ~" if row.get("noisy") else "")


def ratio(row: dict[str, Any] | None) -> str:
    if row is None or row.get("segwal_ratio") is None:
        return "-"
    return f"{row['segwal_ratio']:.2f}x"


def row_notes(case: Case, rows: dict[str, dict[str, Any]]) -> str:
    mine = rows.get("segwal")
    parts: list[str] = []
    if mine is not None:
        if case.group in ("durable", "group") and "records_per_sync" in mine:
            parts.append(f"segwal {mine['records_per_sync']:.1f} rec/fdatasync")
        if "sync_pct" in mine:
            parts.append(
                f"segwal final sync {mine['sync_pct']:.0f}% of the time, "
                f"{human(mine['median_rps_before_sync'])}/s before it"
            )
        if "follow_p50_ms" in mine:
            parts.append(
                f"follow latency p50 {mine['follow_p50_ms']:.2f} ms, "
                f"p99 {mine['follow_p99_ms']:.2f} ms"
            )
        if case.kind == "replay" and not case.cold and "open_ms" in mine:
            parts.append(f"segwal open {mine['open_ms']:.0f} ms")
    raw = rows.get("raw")
    if case.group == "group" and raw is not None and "records_per_sync" in raw:
        parts.append(f"raw {raw['records_per_sync']:.1f} rec/fdatasync")
    return "; ".join(parts)


def group_table(cases: Sequence[Case], contenders: Sequence[str], by: dict[Any, Any]) -> str:
    group = cases[0].group
    # Only the contenders that ran a workload of this table (segwal+buffer: single appends).
    contenders = [c for c in contenders if any((case.name, c) in by for case in cases)]
    peers = [c for c in contenders if c != "segwal"]
    head = ["workload", *contenders]
    if group != "open":
        head += [f"segwal / {p}" for p in peers]
    head.append("notes")
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 2) + "|---|"]
    for case in cases:
        rows = {c: by[(case.name, c)] for c in contenders if (case.name, c) in by}
        cells = [f"`{case.name}`", *(cell(rows.get(c), group) for c in contenders)]
        if group != "open":
            cells += [ratio(rows.get(p)) for p in peers]
        cells.append(row_notes(case, rows))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def details_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| workload | contender | records/s | best | MB/s | spread | fdatasyncs | rec/fdatasync "
        "| notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        notes = []
        if "sync_pct" in r:
            notes.append(f"final sync {r['sync_pct']:.0f}%")
        if "open_ms" in r:
            notes.append(f"open {r['open_ms']:.1f} ms")
        if "ms_per_open" in r:
            notes.append(f"{r['ms_per_open']:.1f} ms per open")
        if r.get("noisy"):
            notes.append("noisy")
        syncs = f"{r['median_syncs']:.0f}" if "median_syncs" in r else "-"
        per = f"{r['records_per_sync']:.1f}" if r.get("records_per_sync") else "-"
        lines.append(
            f"| `{r['workload']}` | {r['contender']} | {human(r['median_rps'])} "
            f"| {human(r['best_rps'])} | {r['median_mbps']:.1f} | {r['spread_pct']:.0f}% "
            f"| {syncs} | {per} | {', '.join(notes)} |"
        )
    return "\n".join(lines)


def header(doc: dict[str, Any]) -> list[str]:
    m = doc["machine"]
    fs = m["filesystem"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    rot = f", rotational={fs['rotational']}" if "rotational" in fs else ""
    lines = [
        "# segwal benchmark",
        "",
        f"- machine: {m['nproc']} CPUs usable ({m['cpu_count']} online), {m['cpu_model']}, "
        f"{m['kernel']} ({m['machine']})",
        f"- load average: {' '.join(map(str, m['loadavg_start']))} before, "
        f"{' '.join(map(str, m.get('loadavg_end', [])))} after",
        f"- directory: {m['dir']} on {fs['fstype']} ({fs['device']} mounted at "
        f"{fs['mountpoint']}; stat -f: {fs['statfs']}{rot})",
        f"- software: {versions}",
        f"- runs: median of {doc['repeat']} interleaved repetitions, contender order rotating"
        f"{' (--quick sizes: a smoke test, not a measurement)' if doc['quick'] else ''}; "
        f"total {doc['elapsed_s']:.0f} s",
        f"- cold cache: {doc['cache_drop']}",
    ]
    lines += [f"- {note}" for note in doc["notes"]]
    if in_memory(fs):
        lines += [
            "",
            f"**WARNING: {m['dir']} is on {fs['fstype']}: fdatasync there is free and nothing "
            "is durable, so the durable and group-commit rows mean nothing. Use --dir on a "
            "real disk.**",
        ]
    busiest = max(m["loadavg_start"][0], m.get("loadavg_end", [0.0])[0])
    if busiest > m["nproc"]:
        lines += [
            "",
            f"**WARNING: load average {busiest} exceeds the {m['nproc']} usable CPUs: other "
            "processes competed for the CPUs (and probably the disk); trust ratios with a "
            "small spread only, and rerun when the machine is idle.**",
        ]
    return lines


def render(doc: dict[str, Any], cases: Sequence[Case], plot_ref: str | None) -> str:
    """The whole report as Markdown."""
    contenders: list[str] = doc["contenders"]
    by = {(r["workload"], r["contender"]): r for r in doc["results"]}
    out = header(doc)
    out += [
        "",
        "Cells are medians of records/s (MB/s counts payload bytes, 1 MB = 10^6 B); `~` marks "
        "a spread above 25% over the repetitions. `segwal / peer` is paired: segwal's rate "
        "divided by the peer's within each repetition, then the median; above 1 segwal is "
        "faster. The raw file checks nothing (no framing, checksum or recovery): it is the "
        "physical floor, not a competitor.",
    ]
    for group, title in GROUPS.items():
        members = [c for c in cases if c.group == group]
        if not members:
            continue
        out += ["", f"## {title}", "", GROUP_NOTES[group], "", group_table(members, contenders, by)]
        if group == "group" and plot_ref:
            out += ["", f"![durable throughput against threads]({plot_ref})"]
    goals = goals_table(doc)
    if goals is not None:
        out += [
            "",
            "## Against the speed goals (issue 15)",
            "",
            "Each goal's ratio is paired like the tables above (within each repetition, then "
            "the median); a goal with a segwal reference compares two segwal workloads "
            "repetition by repetition. Goals whose workloads this run skipped are left out.",
            "",
            goals,
        ]
    out += [
        "",
        "## Details",
        "",
        "Every contender on every workload: median and best records/s, MB/s, spread "
        "((max - min) / median), the data barriers counted in one run (median) and records "
        "per barrier. How each contender's barriers are known:",
        "",
    ]
    out += [f"- {c}: {doc['sync_notes'][c]}" for c in contenders]
    out += ["", details_table(doc["results"]), ""]
    return "\n".join(out)


def plot(rows: Sequence[dict[str, Any]], path: str, title: str) -> str | None:
    """Durable records/s against thread count, one line per contender; a note if skipped."""
    points: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r["group"] == "group":
            kind, count = r["workload"].split("-")[:2]
            threads = int(count.removesuffix("tasks").removesuffix("t"))  # group-16t, aio-16tasks
            name = "segwal.aio (asyncio tasks)" if kind == "aio" else r["contender"]
            points.setdefault(name, []).append((threads, r["median_rps"]))
    if not points:
        return "no plot: the run had no group-commit workload"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return f"no plot: matplotlib is not installed ({INSTALL_HINT})"
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name, xy in points.items():
        xy.sort()
        label = "raw (bare group commit)" if name == "raw" else name
        ax.plot([x for x, _ in xy], [y for _, y in xy], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ticks = sorted({x for xy in points.values() for x, _ in xy})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("appending threads (asyncio tasks for segwal.aio)")
    ax.set_ylabel("durable appends / s (median)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return None


def write_text(path: str, text: str) -> None:
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def write_json(path: str, doc: dict[str, Any]) -> None:
    write_text(path, json.dumps(doc, indent=2) + "\n")
