"""The speed-goal table of the bench report: paired ratios, references, met or not."""

from __future__ import annotations

from typing import Any

from segwal.bench.goals import GOALS, Goal, goals_table, measure, paired


def row(workload: str, contender: str, rates: list[float]) -> dict[str, Any]:
    return {"workload": workload, "contender": contender, "samples": [{"rps": r} for r in rates]}


def test_paired_is_the_median_of_per_repetition_ratios() -> None:
    # Repetition 2 was slow for both: pairing keeps it from dragging the ratio down.
    assert paired([100.0, 10.0, 120.0], [50.0, 5.0, 100.0]) == 2.0
    assert paired([1.0], [0.0]) is None


def test_a_peer_goal_and_a_segwal_reference_goal() -> None:
    doc = {
        "results": [
            row("read-100B", "segwal", [300.0, 310.0, 290.0]),
            row("read-100B", "lmdb", [1000.0, 500.0, 1000.0]),
            row("read-100B-ro", "segwal", [240.0, 100.0, 280.0]),
        ]
    }
    vs_lmdb = Goal("vs lmdb", "read-100B", 0.5, peer="lmdb")
    ro = Goal("ro", "read-100B-ro", 0.8, versus="read-100B")
    assert measure(doc, vs_lmdb) == 0.3
    assert measure(doc, ro) == 0.8
    table = goals_table(doc, [vs_lmdb, ro, Goal("absent", "single-100B", 1.2, peer="raw")])
    assert table is not None
    lines = table.splitlines()
    assert len(lines) == 4  # header, rule, two measured goals; the absent one left out
    assert "| vs lmdb |" in lines[2] and "| 0.30x | **no** |" in lines[2]
    assert "| ro |" in lines[3] and "| 0.80x | yes |" in lines[3]


def test_nothing_measured_means_no_table() -> None:
    assert goals_table({"results": [row("batch-100B", "segwal", [1.0])]}) is None


def test_every_goal_names_one_reference() -> None:
    for goal in GOALS:
        assert (goal.peer is None) != (goal.versus is None), goal
        assert goal.target > 0
