"""A queued batch (``compression_threads``) owns its payloads: the caller may reuse or clear
its list as soon as ``append_batch`` returns, as with the synchronous path."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import segwal

pytest.importorskip("backports.zstd" if sys.version_info < (3, 14) else "compression.zstd")


def test_pipelined_batch_is_not_changed_by_the_caller_reusing_its_list(tmp_path: Path) -> None:
    wal = segwal.open(tmp_path, sync="never", compression="zstd", compression_threads=2)
    batch = [b"A" * 2000 for _ in range(20)]  # 40 KB: queued (>= INLINE_BYTES)
    lsns = wal.append_batch(batch)
    batch[:] = [b"B" * 2000 for _ in range(20)]  # the caller reuses its list
    wal.sync()
    wal.close()
    with segwal.open(tmp_path) as wal:
        assert [bytes(r.payload) for r in wal.replay(lsns.start)] == [b"A" * 2000] * 20


def test_pipelined_batch_survives_the_caller_clearing_its_list(tmp_path: Path) -> None:
    wal = segwal.open(tmp_path, sync="never", compression="zstd", compression_threads=2)
    batch = [b"A" * 2000 for _ in range(20)]
    wal.append_batch(batch)
    batch.clear()
    wal.sync()  # before the fix: WalFailedError (payload lengths disagree with their bytes)
    wal.close()
