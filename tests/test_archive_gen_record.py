"""A generation whose ``GEN`` record was deleted is named by verify and refused by restore,
never restored as a history cut short at its first own segment (review defect 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

import segwal
from archive_logs import forked_archive
from segwal.archive.catalog import verify_archive


def test_a_fork_without_its_generation_record_is_named_and_refused(tmp_path: Path) -> None:
    store, (first, second) = forked_archive(tmp_path)
    store.delete(f"g/{second}/GEN")
    report = verify_archive(store)
    assert [(p.key, p.kind) for p in report.problems] == [(f"g/{second}/GEN", "missing")]
    for n, kwargs in enumerate(({}, {"generation": second})):
        with pytest.raises(segwal.ArchiveCorruptError, match="GEN is missing"):
            segwal.restore(store, tmp_path / f"r{n}", **kwargs)  # type: ignore[arg-type]
    # The older generation, whole and recorded, still restores when asked for.
    result = segwal.restore(store, tmp_path / "old", generation=first)
    assert (result.first_lsn, result.last_lsn) == (1, 60)


def test_a_root_generation_without_its_record_restores_only_when_asked_for(
    tmp_path: Path,
) -> None:
    store, (first, _second) = forked_archive(tmp_path)
    store.delete(f"g/{first}/GEN")
    assert not verify_archive(store).ok
    with pytest.raises(segwal.ArchiveCorruptError, match="GEN is missing"):
        segwal.restore(store, tmp_path / "r")  # the newest forks from it
    result = segwal.restore(store, tmp_path / "old", generation=first)
    assert (result.first_lsn, result.last_lsn) == (1, 60)  # it starts at the log's start
