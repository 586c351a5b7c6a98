"""Shared test helpers: deterministic payloads, a steerable clock, a fresh log directory.

Import the plain helpers with ``from conftest import payload, FakeClock``; the fixtures need
no import.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest


def payload(lsn: int, size: int | None = None) -> bytes:
    """The payload the tests write at ``lsn``: deterministic, distinct per LSN, any size.

    Without ``size`` the length varies with the LSN (0..63 bytes, so some are empty).
    """
    if size is None:
        size = (lsn * 7919) % 64
    seed = hashlib.blake2b(lsn.to_bytes(8, "little"), digest_size=32).digest()
    return (seed * (size // len(seed) + 1))[:size]


class FakeClock:
    """A clock in microseconds that only moves when a test moves it (``clock=`` option)."""

    def __init__(self, start_us: int = 1_700_000_000_000_000) -> None:
        self.now_us = start_us

    def __call__(self) -> int:
        return self.now_us

    def advance(self, seconds: float) -> None:
        """Move the clock by ``seconds`` (negative to step it back)."""
        self.now_us += round(seconds * 1_000_000)


@pytest.fixture
def wal_dir(tmp_path: Path) -> str:
    """A path for a new log directory (not created yet) on the real file system."""
    return str(tmp_path / "wal")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
