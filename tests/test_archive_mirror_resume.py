"""A first mirror pass over a forked generation, interrupted in the parent's part of its
chain, resumes along the chain (review defect 6)."""

from __future__ import annotations

from pathlib import Path

import pytest

import segwal
from archive_logs import forked_archive
from segwal.archive.catalog import read_listing
from segwal.archive.mirror import mirror


def test_an_interrupted_first_pass_of_a_fork_resumes_in_the_parent(tmp_path: Path) -> None:
    store, _ = forked_archive(tmp_path)
    listing = read_listing(store)
    parent, child = listing.generations
    chain = listing.chain(child)
    assert chain[1].generation == parent  # the second segment is inherited
    victim = store.objects[chain[1].key]
    held = victim.data
    victim.data = held[:-1] + bytes([held[-1] ^ 1])  # the first pass stops there
    with pytest.raises(segwal.ArchiveCorruptError):
        mirror(store, str(tmp_path / "m"))
    assert len(list((tmp_path / "m").glob("*.wal"))) == 1
    victim.data = held
    result = mirror(store, str(tmp_path / "m"))
    assert (result.generation, result.first_lsn, result.last_lsn) == (child, 1, 70)
    with (
        segwal.open(tmp_path / "m", readonly=True) as copy,
        segwal.open(tmp_path / "log", readonly=True) as source,
    ):
        assert [bytes(r.payload) for r in copy.replay()] == [
            bytes(r.payload) for r in source.replay()
        ]
