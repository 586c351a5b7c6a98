"""A stateful model test: random sequences of operations against a plain list of records.

Each machine runs on its own real directory with small segments, so rotations happen every
few records; reopening with another segment size mixes segment layouts in one log. One
machine per sync mode; in "interval" the durable LSN moves on its own, so the checks there
use bounds instead of exact values.
"""

from __future__ import annotations

import shutil
import tempfile
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import segwal
from segwal import NotFoundError, Wal

SEGMENT_SIZES = [512, 600, 1024, 4096]

record_types = st.one_of(st.just(0), st.integers(min_value=0, max_value=0xFFFF))
small_payloads = st.binary(max_size=120)
# Sometimes larger than the segment: such a record gets a segment of its own.
any_payloads = st.one_of(small_payloads, small_payloads, st.binary(min_size=300, max_size=5000))


class WalMachine(RuleBasedStateMachine):
    sync_mode: Any = "always"
    buffer_bytes = 0  # > 0: single appends gather in memory (sync "interval"/"never" only)

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="segwal-model-")
        self.path = f"{self.dir}/wal"
        self.model: list[tuple[int, bytes]] = []  # (type, payload) of LSN i + 1
        self.durable = 0  # a lower bound of the durable LSN
        self.segment_bytes = 600
        self.wal = self._open()

    def _open(self) -> Wal:
        return segwal.open(
            self.path,
            segment_bytes=self.segment_bytes,
            sync=self.sync_mode,
            sync_interval=0.005,
            buffer_bytes=self.buffer_bytes,
        )

    def teardown(self) -> None:
        try:
            if not self.wal.closed:
                self.wal.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers ------------------------------------------------------------------------------

    @property
    def last(self) -> int:
        return len(self.model)

    def _check_durable_after_append(self, first_new: int) -> None:
        durable = self.wal.durable_lsn
        assert self.durable <= durable <= self.last
        if self.sync_mode == "always":
            assert durable == self.last
        elif self.sync_mode == "never":
            # nothing new is durable without a barrier; a rotation seals what came before
            assert durable < first_new
        self.durable = durable

    def _expected(self, lsn: int) -> tuple[int, bytes]:
        return self.model[lsn - 1]

    # -- rules --------------------------------------------------------------------------------

    @rule(data=any_payloads, record_type=record_types)
    def append(self, data: bytes, record_type: int) -> None:
        lsn = self.wal.append(data, type=record_type)
        assert lsn == self.last + 1
        self.model.append((record_type, data))
        self._check_durable_after_append(lsn)

    @rule(items=st.lists(small_payloads, max_size=12), record_type=record_types)
    def append_batch(self, items: list[bytes], record_type: int) -> None:
        first = self.last + 1
        got = self.wal.append_batch(items, type=record_type)
        assert got == range(first, first + len(items))
        self.model.extend((record_type, p) for p in items)
        if items:
            self._check_durable_after_append(first)

    @rule(items=st.lists(st.binary(min_size=200, max_size=900), min_size=2, max_size=6))
    def append_big_batch(self, items: list[bytes]) -> None:
        # usually larger than a segment: never split, one segment of its own
        first = self.last + 1
        got = self.wal.append_batch(items, type=7)
        assert got == range(first, first + len(items))
        self.model.extend((7, p) for p in items)
        self._check_durable_after_append(first)
        holders = [s for s in self.wal.segments() if s.first_lsn <= first <= s.last_lsn]
        assert len(holders) == 1
        assert holders[0].last_lsn >= got.stop - 1

    @rule()
    def rotate(self) -> None:
        active = self.wal.segments()[-1]
        info = self.wal.rotate()
        if active.record_count == 0:
            assert info is None
        else:
            assert info is not None
            assert info.sealed
            assert (info.first_lsn, info.last_lsn) == (active.first_lsn, self.last)
            assert self.wal.durable_lsn == self.last
            self.durable = self.last
        assert self.wal.segments()[-1].record_count == 0

    @rule()
    def sync(self) -> None:
        assert self.wal.sync() == self.last
        assert self.wal.durable_lsn == self.last
        self.durable = self.last

    @rule(segment_bytes=st.sampled_from(SEGMENT_SIZES))
    def reopen(self, segment_bytes: int) -> None:
        self.wal.close()
        self.segment_bytes = segment_bytes
        self.wal = self._open()
        assert self.wal.recovery.clean
        assert not self.wal.recovery.torn_tail
        assert self.wal.last_lsn == self.last
        assert self.wal.durable_lsn == self.last  # close made everything durable
        self.durable = self.last

    @rule()
    def replay_all(self) -> None:
        records = list(self.wal.replay(unsynced=True))
        assert [(r.type, r.payload) for r in records] == self.model
        assert [r.lsn for r in records] == list(range(1, self.last + 1))
        stamps = [r.timestamp_us for r in records]
        assert stamps == sorted(stamps)
        durable = self.wal.durable_lsn
        visible = [(r.type, r.payload) for r in self.wal.replay()]
        if self.sync_mode == "interval":
            # the flusher may move the durable LSN between the two calls
            assert durable <= len(visible) <= self.last
            assert visible == self.model[: len(visible)]
        else:
            assert visible == self.model[:durable]

    @rule(data=st.data())
    def replay_range(self, data: st.DataObject) -> None:
        start = data.draw(st.one_of(st.none(), st.integers(-2, self.last + 3)), label="from")
        stop = data.draw(st.one_of(st.none(), st.integers(-2, self.last + 3)), label="to")
        got = list(self.wal.replay(start, stop, unsynced=True))
        lo = 1 if start is None else max(start, 1)
        hi = self.last if stop is None else min(stop, self.last)
        assert [r.lsn for r in got] == list(range(lo, hi + 1))
        assert [(r.type, r.payload) for r in got] == self.model[lo - 1 : max(hi, lo - 1)]

    @precondition(lambda self: self.last > 0)
    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        lsn = data.draw(st.integers(1, self.last), label="lsn")
        record = self.wal.read(lsn, unsynced=True)
        assert (record.lsn, record.type, record.payload) == (lsn, *self._expected(lsn))
        durable = self.wal.durable_lsn
        if lsn <= durable:
            assert self.wal.read(lsn) == record
        elif self.sync_mode == "never":
            with pytest.raises(NotFoundError):
                self.wal.read(lsn)

    @rule(lsn=st.sampled_from([-1, 0, 1, 2]), beyond=st.booleans())
    def read_outside(self, lsn: int, beyond: bool) -> None:
        if beyond:
            lsn = self.last + 1 + abs(lsn)
        elif lsn >= 1:
            return  # inside (or the first record): covered by read
        with pytest.raises(NotFoundError) as info:
            self.wal.read(lsn, unsynced=True)
        assert (info.value.first_lsn, info.value.last_lsn) == (1, self.last)

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def watermarks(self) -> None:
        wal = self.wal
        assert (wal.first_lsn, wal.last_lsn, wal.next_lsn) == (1, self.last, self.last + 1)
        assert self.durable <= wal.durable_lsn <= self.last

    @invariant()
    def segments_chain(self) -> None:
        infos = self.wal.segments()
        assert infos[0].first_lsn == 1
        assert infos[-1].last_lsn == self.last
        assert not infos[-1].sealed
        assert all(s.sealed for s in infos[:-1])
        for a, b in pairwise(infos):
            assert b.first_lsn == a.last_lsn + 1
        for s in infos[:-1]:
            # a sealed segment overshoots its target only to hold one oversized write
            assert s.record_count >= 1


MACHINES = {
    mode: type(f"WalMachine_{mode}", (WalMachine,), {"sync_mode": mode})
    for mode in ("always", "interval", "never")
}
for _mode in ("interval", "never"):
    MACHINES[f"{_mode}+buffer"] = type(
        f"WalMachine_{_mode}_buffered", (WalMachine,), {"sync_mode": _mode, "buffer_bytes": 300}
    )


@pytest.mark.parametrize("mode", sorted(MACHINES))
def test_wal_matches_the_model(mode: str) -> None:
    run_state_machine_as_test(
        MACHINES[mode],
        settings=settings(
            max_examples=50,
            stateful_step_count=50,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
