#!/usr/bin/env python3
"""Long crash-state runs by hand: the harness of ``tests/crashlib.py`` with a seed and a budget.

Runs seeded random workloads (and, with ``--exhaustive``, the bounded-exhaustive set first)
until ``--states`` distinct crash states have been checked, printing progress and totals.
Exits 1 at the first broken promise, printing the workload that broke it (rerun it alone
with the same seed to reproduce). Examples::

    .venv/bin/python scripts/crash_long.py --seed 7 --states 1000000
    .venv/bin/python scripts/crash_long.py --seed 7 --states 50000 --modes never --ops 20-60
    .venv/bin/python scripts/crash_long.py --exhaustive --depth 3 --states 0
    .venv/bin/python scripts/crash_long.py --barriers            # the barrier table
    .venv/bin/python scripts/crash_long.py --barriers --sites seal.sync,meta.rename
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import crashlib


def _range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    return int(low), int(high or low)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1, help="seed of the random workloads")
    parser.add_argument(
        "--states", type=int, default=100_000, help="stop after this many distinct states"
    )
    parser.add_argument(
        "--ops",
        "--ops-per-workload",
        dest="ops",
        type=_range,
        default=(10, 30),
        help="steps per random workload, LOW-HIGH (default 10-30)",
    )
    parser.add_argument(
        "--modes", default=",".join(crashlib.MODES), help="sync modes, comma-separated"
    )
    parser.add_argument("--procs", type=int, default=None, help="worker processes")
    parser.add_argument("--exhaustive", action="store_true", help="run the exhaustive set first")
    parser.add_argument("--depth", type=int, default=3, help="exhaustive sequence length")
    parser.add_argument("--limit", type=int, default=10, help="exhaustive subset limit")
    parser.add_argument("--random-subsets", type=int, default=32)
    parser.add_argument("--skip", default="", help="barrier sites to skip, comma-separated")
    parser.add_argument("--barriers", action="store_true", help="print the barrier table")
    parser.add_argument("--sites", default="", help="with --barriers: only these sites")
    parser.add_argument("--deep", action="store_true", help="with --barriers: more workloads")
    parser.add_argument("--json", default="", help="write the totals to this file")
    args = parser.parse_args(argv)
    modes = tuple(m for m in args.modes.split(",") if m)

    if args.barriers:
        sites = [s for s in args.sites.split(",") if s] or None
        results = crashlib.barrier_table(
            sites,
            modes,
            deep=args.deep,
            procs=args.procs,
            progress=lambda r: print(
                f"{r.site:26} {r.mode:9} {r.row()} ({r.states} states, {r.seconds:.1f} s)",
                flush=True,
            ),
        )
        print(crashlib.format_table(results))
        return 0

    policy = crashlib.Policy(
        exhaustive_limit=args.limit, random_subsets=args.random_subsets, seed=args.seed
    )
    skip = [s for s in args.skip.split(",") if s]
    keys: set[bytes] = set()
    totals = crashlib.Totals(seeds={args.seed})
    workers = crashlib.Workers(args.procs)  # its processes remember what they recovered
    began = time.perf_counter()
    last_print = [0.0]

    def progress(report: crashlib.Report) -> None:
        now = time.perf_counter()
        if now - last_print[0] >= 10:
            last_print[0] = now
            print(
                f"[{now - began:7.0f} s] {len(keys | report.keys)} distinct states, "
                f"{totals.workloads + report.totals.workloads} workloads",
                flush=True,
            )

    def run(specs: list[crashlib.Spec], until_states: int | None) -> crashlib.Report:
        def until(report: crashlib.Report) -> bool:
            return until_states is not None and len(keys | report.keys) >= until_states

        report = crashlib.run_specs(
            specs,
            policy,
            skip=skip,
            procs=args.procs,
            until=until,
            progress=progress,
            chunk=1,
            workers=workers,
        )
        keys.update(report.keys)
        totals.add(report.totals)
        return report

    phases: list[tuple[str, list[crashlib.Spec], int | None]] = []
    if args.exhaustive:
        phases.append(
            (
                "exhaustive",
                crashlib.creation_specs(modes) + crashlib.exhaustive_specs(modes, depth=args.depth),
                None,
            )
        )
    if args.states:
        # Random workloads in rounds until the budget is met.
        phases.append(("random", [], args.states))
    failed = None
    for name, specs, budget in phases:
        if name == "random":
            round_no = 0
            while budget is not None and len(keys) < budget and failed is None:
                batch = crashlib.random_specs(
                    args.seed * 1000 + round_no, 8, modes=modes, length=args.ops
                )
                report = run(batch, budget)
                failed = report if report.violation else None
                round_no += 1
        else:
            report = run(specs, budget)
            failed = report if report.violation else None
        print(f"{name}: {len(keys)} distinct states so far", flush=True)
        if failed is not None:
            break
    workers.close()
    wall = time.perf_counter() - began
    print(
        f"totals: {len(keys)} distinct crash states; {totals.line()}; {wall:.0f} s wall; "
        f"seed {args.seed}; modes {','.join(modes)}"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "distinct_states": len(keys),
                    "workloads": totals.workloads,
                    "images": totals.images,
                    "crash_points": totals.crash_points,
                    "recovery_states": totals.recovery_states,
                    "kill_states": totals.kill_states,
                    "cpu_seconds": round(totals.seconds, 1),
                    "wall_seconds": round(wall, 1),
                    "seed": args.seed,
                    "modes": list(modes),
                    "violation": failed.violation if failed else None,
                },
                indent=2,
            )
        )
    if failed is not None:
        print(f"VIOLATION in {failed.failed_spec}:\n{failed.violation}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
