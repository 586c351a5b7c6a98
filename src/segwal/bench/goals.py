"""The speed goals (issue 15) read against one run: each goal's paired ratio and whether it is met.

A goal compares segwal on one workload with a reference measured in the same run: a peer
on the same workload (``segwal / lmdb`` on ``replay-100B-warm``), or segwal itself on
another workload (readonly reads against the writer's, 4,000 segments against 200). The
ratio is paired like every other ratio in the report: within each repetition, then the
median, so a repetition slowed down for everyone barely moves it.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Goal:
    """segwal on ``workload`` divided by ``reference`` should reach ``target``."""

    label: str
    workload: str
    target: float
    peer: str | None = None  # the reference contender on the same workload
    versus: str | None = None  # or segwal on this other workload
    contender: str = "segwal"  # who is measured on ``workload``


GOALS: tuple[Goal, ...] = (
    Goal("random read 100 B vs rocksdict", "read-100B", 1.5, peer="rocksdict"),
    Goal("random read 100 B vs sqlite3", "read-100B", 1.5, peer="sqlite3"),
    Goal("random read 100 B vs lmdb", "read-100B", 0.5, peer="lmdb"),
    Goal("random read, readonly open vs the writer", "read-100B-ro", 0.8, versus="read-100B"),
    Goal("random read, 4,000 segments vs 200", "read-100B-4000seg", 0.8, versus="read-100B-200seg"),
    Goal("replay 100 B warm vs lmdb", "replay-100B-warm", 1.2, peer="lmdb"),
    Goal("replay 100 B cold vs lmdb", "replay-100B-cold", 1.0, peer="lmdb"),
    Goal("replay 1 KiB cold vs lmdb", "replay-1KiB-cold", 1.0, peer="lmdb"),
    Goal("single append 100 B, sync never vs rocksdict", "single-100B", 1.2, peer="rocksdict"),
    Goal("single append 1 KiB, sync never vs rocksdict", "single-1KiB", 1.2, peer="rocksdict"),
    Goal("durable append, one thread vs raw", "durable-100B", 0.95, peer="raw"),
    Goal(
        "durable, preallocate=True vs raw with the same trick",
        "durable-100B-prealloc",
        0.95,
        peer="raw",
    ),
    Goal(
        "durable, direct_io=True vs raw with the same trick",
        "durable-100B-direct",
        0.95,
        peer="raw",
    ),
    Goal("durable, 16 threads vs the bare group commit", "group-16t", 1.0, peer="raw"),
    Goal("durable, 64 threads vs the bare group commit", "group-64t", 1.0, peer="raw"),
    Goal("durable, 64 threads clearly above 16", "group-64t", 1.05, versus="group-16t"),
    Goal("batch append 64 KiB vs lmdb", "batch-64KiB", 1.2, peer="lmdb"),
)


def _rates(doc: dict[str, Any], workload: str, contender: str) -> list[float] | None:
    for row in doc["results"]:
        if row["workload"] == workload and row["contender"] == contender:
            return [float(s["rps"]) for s in row["samples"]]
    return None


def paired(mine: Sequence[float], theirs: Sequence[float]) -> float | None:
    """The median over repetitions of mine / theirs within each repetition."""
    pairs = [m / t for m, t in zip(mine, theirs, strict=False) if t > 0]
    return statistics.median(pairs) if pairs else None


def measure(doc: dict[str, Any], goal: Goal) -> float | None:
    """The goal's paired ratio in this run, or None when a side did not run."""
    mine = _rates(doc, goal.workload, goal.contender)
    if goal.peer is not None:
        theirs = _rates(doc, goal.workload, goal.peer)
    else:
        assert goal.versus is not None
        theirs = _rates(doc, goal.versus, goal.contender)
    if mine is None or theirs is None:
        return None
    return paired(mine, theirs)


def reference(goal: Goal) -> str:
    if goal.peer is not None:
        return f"`{goal.workload}`: {goal.contender} / {goal.peer}"
    return f"{goal.contender} `{goal.workload}` / `{goal.versus}`"


def goals_table(doc: dict[str, Any], goals: Sequence[Goal] = GOALS) -> str | None:
    """The Markdown table of the goals this run measured; None when it measured none."""
    lines = [
        "| goal | paired ratio of | target | this run | met |",
        "|---|---|---:|---:|---|",
    ]
    measured = 0
    for goal in goals:
        got = measure(doc, goal)
        if got is None:
            continue
        measured += 1
        met = "yes" if got >= goal.target else "**no**"
        lines.append(
            f"| {goal.label} | {reference(goal)} | {goal.target:.2f}x | {got:.2f}x | {met} |"
        )
    return "\n".join(lines) if measured else None
