"""Running the suite: interleaved repetitions, rotating contender order, medians, progress.

Each repetition runs every selected workload for every contender, the contender order
shifting by one each repetition, so that a noisy neighbour or a writeback storm hits all
contenders alike. A writing run starts in a fresh directory that is deleted afterwards; the
logs that the replay and read workloads read are written once per run (untimed).
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, Protocol

from segwal.bench import cases as c
from segwal.bench import readloads as r
from segwal.bench import workloads as w
from segwal.bench.cases import Case
from segwal.bench.peers import (
    LmdbPeer,
    Peer,
    RocksdictPeer,
    SegwalBufferedPeer,
    SegwalPeer,
    Sqlite3Peer,
)
from segwal.bench.raw import RawPeer
from segwal.bench.system import CacheDropper
from segwal.bench.workloads import Sample

# Column order of the report: segwal first, the physical baseline last.
PEERS: tuple[type[Peer], ...] = (
    SegwalPeer,
    SegwalBufferedPeer,
    Sqlite3Peer,
    LmdbPeer,
    RocksdictPeer,
    RawPeer,
)
NOISY_PCT = 25.0


def available_peers() -> tuple[list[Peer], list[str]]:
    """The contenders that can run here, and one note per one that cannot."""
    peers: list[Peer] = []
    notes: list[str] = []
    for cls in PEERS:
        peer = cls()
        why = peer.missing()
        if why is None:
            peers.append(peer)
        else:
            notes.append(why)
    return peers, notes


def human(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    if x >= 10:
        return f"{x:.0f}"
    return f"{x:.2g}"


# -- progress ----------------------------------------------------------------------------


class Progress(Protocol):
    def advance(self, label: str, sample: Sample | None) -> None: ...

    def close(self) -> None: ...


def line(label: str, sample: Sample | None) -> str:
    if sample is None:
        return f"{label}: preparing"
    if "ms_per_open" in sample.extra:
        return f"{label:34} {sample.extra['ms_per_open']:8.1f} ms per open"
    return f"{label:34} {human(sample.rps):>8} rec/s {sample.mbps:9.1f} MB/s"


class PlainProgress:
    """One line per finished run on stderr."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0

    def advance(self, label: str, sample: Sample | None) -> None:
        if sample is not None:
            self.done += 1
        print(f"[{self.done}/{self.total}] {line(label, sample)}", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


class RichProgress:
    """A rich progress bar on stderr, with the finished runs printed above it."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as Bar

        self.bar = Bar(
            TextColumn("{task.description:<34}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.task = self.bar.add_task("segwal bench", total=total)
        self.bar.start()

    def advance(self, label: str, sample: Sample | None) -> None:
        if sample is None:
            self.bar.update(self.task, description=f"{label} (preparing)")
            return
        self.bar.console.print(line(label, sample), highlight=False)
        self.bar.update(self.task, advance=1, description=label)

    def close(self) -> None:
        self.bar.stop()


def make_progress(total: int) -> Progress:
    """rich's bar when it is installed and stderr is a terminal, plain lines otherwise."""
    if sys.stderr.isatty():
        try:
            return RichProgress(total)
        except ImportError:
            pass
    return PlainProgress(total)


# -- the runs ----------------------------------------------------------------------------


def applies(peer: Peer, case: Case) -> bool:
    return case.kind in peer.kinds


class Runner:
    """Runs cases in fresh directories under ``base``; read-side logs are written once."""

    def __init__(self, base: str, dropper: CacheDropper) -> None:
        self.base = base
        self.dropper = dropper
        self.counter = 0
        self.inputs: dict[str, Any] = {}
        self.datasets: dict[tuple[Any, ...], str] = {}
        self.segment_logs: dict[int, str] = {}

    def fresh(self, peer: Peer, case: Case) -> str:
        self.counter += 1
        return os.path.join(self.base, f"{self.counter:04d}-{case.name}-{peer.name}")

    def needs_preparing(self, peer: Peer, case: Case) -> bool:
        if case.kind in ("replay", "replayframes", "read", "readview"):
            return (peer.name, case.record_size, case.dataset or case.records) not in self.datasets
        if case.kind == "readsegs":
            return ("segs", case.dataset) not in self.datasets
        return case.kind == "open" and case.dataset not in self.segment_logs

    def dataset(self, peer: Peer, size: int, n: int) -> str:
        key = (peer.name, size, n)
        if key not in self.datasets:
            path = os.path.join(self.base, f"data-{peer.name}-{c.size_label(size)}-{n}")
            peer.prepare(path, w.batches(size, n, 1000))
            self.datasets[key] = path
        return self.datasets[key]

    def run(self, peer: Peer, case: Case) -> Sample:
        if case.kind == "replay":
            path = self.dataset(peer, case.record_size, case.records)
            drop = self.dropper if case.cold else None
            return r.time_replay(peer, path, case.record_size, case.records, drop)
        if case.kind == "replayframes":
            path = self.dataset(peer, case.record_size, case.records)
            return r.time_replay_frames(path, case.record_size, case.records)
        if case.kind in ("read", "readview"):
            path = self.dataset(peer, case.record_size, case.dataset)
            if case.name not in self.inputs:
                self.inputs[case.name] = w.random_lsns(case.records, case.dataset)
            if case.kind == "readview":
                return r.time_segwal_reads(path, case.record_size, self.inputs[case.name], True)
            return r.time_reads(peer, path, case.record_size, self.inputs[case.name])
        if case.kind == "readsegs":
            if ("segs", case.dataset) not in self.datasets:
                path = os.path.join(self.base, f"read-segments-{case.dataset}")
                r.build_read_segments(path, case.dataset, case.log_records)
                self.datasets[("segs", case.dataset)] = path
            path = self.datasets[("segs", case.dataset)]
            if case.name not in self.inputs:  # the same LSNs for every segment count
                shared = f"readsegs-{case.log_records}"
                if shared not in self.inputs:
                    self.inputs[shared] = w.random_lsns(case.records, case.log_records)
                self.inputs[case.name] = self.inputs[shared]
            # Warm: one read per frame first (handles, sparse indexes, frames), so the clock
            # sees what a read costs in a log of that many segments, not first touches.
            warm = range(1, case.log_records, w.SEGMENT_RECORDS)
            return r.time_segwal_reads(path, case.record_size, self.inputs[case.name], False, warm)
        if case.kind == "open":
            if case.dataset not in self.segment_logs:
                path = os.path.join(self.base, f"segments-{case.dataset}")
                r.build_segments(path, case.dataset)
                self.segment_logs[case.dataset] = path
            return r.time_opens(self.segment_logs[case.dataset], case.readonly, case.records)
        path = self.fresh(peer, case)
        try:
            payload = w.pool(case.record_size)[0]
            if case.kind == "batch":
                if case.name not in self.inputs:
                    self.inputs[case.name] = w.batches(case.record_size, case.records, case.batch)
                return w.time_batch(peer, path, self.inputs[case.name])
            if case.kind == "single":
                if case.name not in self.inputs:
                    self.inputs[case.name] = w.sequence(case.record_size, case.records)
                return w.time_single(peer, path, self.inputs[case.name])
            if case.kind == "durable":
                return w.time_durable(peer, path, payload, case.seconds, case.records)
            if case.kind in ("durable-prealloc", "durable-direct"):
                trick = case.kind.removeprefix("durable-")
                return w.time_durable(peer, path, payload, case.seconds, case.records, trick)
            if case.kind == "group":
                return w.time_group(peer, path, payload, case.seconds, case.threads)
            if case.kind == "aio":
                return w.time_aio(path, payload, case.seconds, case.threads)
            raise ValueError(f"unknown workload kind {case.kind!r}")
        finally:
            shutil.rmtree(path, ignore_errors=True)


Samples = dict[tuple[str, str], list[Sample]]


def run_all(
    runner: Runner, cases: Sequence[Case], peers: Sequence[Peer], repeat: int, progress: Progress
) -> Samples:
    """Every case for every applicable peer, ``repeat`` times, interleaved."""
    samples: Samples = {}
    for rep in range(repeat):
        shift = rep % len(peers)
        order = list(peers[shift:]) + list(peers[:shift])
        for case in cases:
            for peer in order:
                if not applies(peer, case):
                    continue
                label = f"[{rep + 1}/{repeat}] {case.name} {peer.name}"
                if runner.needs_preparing(peer, case):
                    progress.advance(label, None)
                sample = runner.run(peer, case)
                samples.setdefault((case.name, peer.name), []).append(sample)
                progress.advance(label, sample)
    return samples


# -- medians and ratios ------------------------------------------------------------------


def summarize(case: Case, peer: Peer, samples: list[Sample]) -> dict[str, Any]:
    """Medians over the repetitions of one contender on one workload."""
    rates = [s.rps for s in samples]
    med = statistics.median(rates)
    row: dict[str, Any] = {
        "workload": case.name,
        "group": case.group,
        "contender": peer.name,
        "median_rps": med,
        "best_rps": max(rates),
        "median_mbps": statistics.median([s.mbps for s in samples]),
        "median_seconds": statistics.median([s.seconds for s in samples]),
        "spread_pct": (max(rates) - min(rates)) / med * 100 if med else 0.0,
        "sync_note": peer.sync_note,
        "samples": [asdict(s) | {"rps": s.rps, "mbps": s.mbps} for s in samples],
    }
    counted = [s for s in samples if s.syncs is not None]
    if counted and len(counted) == len(samples):
        row["median_syncs"] = statistics.median([s.syncs or 0 for s in counted])
        row["records_per_sync"] = statistics.median(
            [s.records / s.syncs if s.syncs else 0.0 for s in counted]
        )
    if samples and all("sync_s" in s.extra for s in samples):
        row["sync_pct"] = statistics.median(
            [s.extra["sync_s"] / s.seconds * 100 for s in samples if s.seconds]
        )
        row["median_rps_before_sync"] = statistics.median(
            [s.records / max(s.seconds - s.extra["sync_s"], 1e-9) for s in samples]
        )
    for key in ("follow_p50_ms", "follow_p99_ms"):
        found = [s.extra[key] for s in samples if key in s.extra]
        if found:
            row[key] = statistics.median(found)
    opens = [s.extra["open_ms"] for s in samples if "open_ms" in s.extra]
    if opens:
        row["open_ms"] = statistics.median(opens)
    if case.kind == "open":
        row["ms_per_open"] = statistics.median([s.seconds / s.records * 1e3 for s in samples])
    return row


def paired_ratio(mine: list[Sample], theirs: list[Sample]) -> float | None:
    """segwal / peer: the median over repetitions of the ratio within each repetition.

    A repetition that a noisy neighbour slowed down for everyone then barely moves it.
    """
    pairs = [m.rps / t.rps for m, t in zip(mine, theirs, strict=False) if t.rps > 0]
    return statistics.median(pairs) if pairs else None


def summarize_all(
    cases: Sequence[Case], peers: Sequence[Peer], samples: Samples
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for case in cases:
        ref = samples.get((case.name, "segwal"))
        for peer in peers:
            got = samples.get((case.name, peer.name))
            if not got:
                continue
            row = summarize(case, peer, got)
            row["description"] = case.description
            if ref is not None and peer.name != "segwal":
                row["segwal_ratio"] = paired_ratio(ref, got)
            row["noisy"] = row["spread_pct"] > NOISY_PCT
            rows.append(row)
    return rows
