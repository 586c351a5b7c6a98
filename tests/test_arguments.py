"""Arguments of the wrong type or value get one documented answer (issue 13, #13).

A wrong type is ``ArgumentTypeError`` (a ``ConfigError`` and a ``TypeError``); a value of
the right type that the method cannot take is ``ConfigError`` (or ``NotFoundError`` for an
LSN the log does not hold); a payload that is not bytes-like is ``InvalidPayloadError``. No
raw ``TypeError``, ``struct.error`` or ``OverflowError`` from inside, and the log still
works afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import segwal
from segwal import ArgumentTypeError

Call = Callable[[segwal.Wal], Any]

WRONG_TYPES: list[tuple[str, Call]] = [
    ("read str", lambda w: w.read("1")),
    ("read float", lambda w: w.read(1.5)),
    ("read None", lambda w: w.read(None)),
    ("read bool", lambda w: w.read(True)),
    ("read unsynced str", lambda w: w.read(1, unsynced="yes")),
    ("replay str", lambda w: w.replay("1")),
    ("replay to float", lambda w: w.replay(1, 2.0)),
    ("replay unsynced int", lambda w: w.replay(unsynced=1)),
    ("read_batch str", lambda w: w.read_batch("1")),
    ("read_batch max_records str", lambda w: w.read_batch(1, max_records="a")),
    ("read_batch max_bytes float", lambda w: w.read_batch(1, max_bytes=1.5)),
    ("lsn_at str", lambda w: w.lsn_at("x")),
    ("lsn_at float", lambda w: w.lsn_at(1.5)),
    ("wait_durable str", lambda w: w.wait_durable("1")),
    ("wait_durable timeout str", lambda w: w.wait_durable(1, timeout="1")),
    ("follow str", lambda w: w.follow("3")),
    ("follow timeout str", lambda w: w.follow(3, timeout="1")),
    ("follow timeout list", lambda w: w.follow(3, timeout=[1])),
    ("truncate_before str", lambda w: w.truncate_before("3")),
    ("truncate_after float", lambda w: w.truncate_after(3.0)),
    ("truncate_plan str", lambda w: w.truncate_plan(before="3")),
    ("hold lsn str", lambda w: w.hold("h", "3")),
    ("prune_through str", lambda w: w.prune_through("3")),
    ("append type str", lambda w: w.append(b"x", type="1")),
    ("append_batch type float", lambda w: w.append_batch([b"x"], type=1.0)),
    ("cursor start str", lambda w: w.cursor("c", start="1")),
]

WRONG_VALUES: list[tuple[str, Call, type[Exception]]] = [
    ("read_batch max_records 0", lambda w: w.read_batch(1, max_records=0), segwal.ConfigError),
    ("read_batch max_bytes -1", lambda w: w.read_batch(1, max_bytes=-1), segwal.ConfigError),
    ("follow timeout -1", lambda w: w.follow(3, timeout=-1), segwal.ConfigError),
    ("follow timeout nan", lambda w: w.follow(3, timeout=float("nan")), segwal.ConfigError),
    ("wait_durable timeout -1", lambda w: w.wait_durable(1, timeout=-1.0), segwal.ConfigError),
    ("read 0", lambda w: w.read(0), segwal.NotFoundError),
    ("read huge", lambda w: w.read(10**30), segwal.NotFoundError),
    ("truncate_before huge", lambda w: w.truncate_before(10**30), segwal.NotFoundError),
    ("truncate_after -5", lambda w: w.truncate_after(-5), segwal.NotFoundError),
    ("hold huge", lambda w: w.hold("h", 10**30), segwal.NotFoundError),
    ("append type -1", lambda w: w.append(b"x", type=-1), segwal.ConfigError),
    ("append type 2**16", lambda w: w.append(b"x", type=2**16), segwal.ConfigError),
    ("append_batch None", lambda w: w.append_batch(None), segwal.InvalidPayloadError),
    ("append_batch bytes", lambda w: w.append_batch(b"abc"), segwal.InvalidPayloadError),
    ("append_batch str", lambda w: w.append_batch("abc"), segwal.InvalidPayloadError),
    ("append_batch int", lambda w: w.append_batch(3), segwal.InvalidPayloadError),
    ("append_batch [None]", lambda w: w.append_batch([None]), segwal.InvalidPayloadError),
    ("append str", lambda w: w.append("text"), segwal.InvalidPayloadError),
    ("append None", lambda w: w.append(None), segwal.InvalidPayloadError),
    ("hold name int", lambda w: w.hold(3, 1), segwal.ConfigError),
    ("cursor name bytes", lambda w: w.cursor(b"c"), segwal.ConfigError),
]


@pytest.fixture
def wal(tmp_path: Path) -> Any:
    with segwal.open(tmp_path / "log", segment_bytes=2048) as log:
        log.append_batch([b"record %d" % i for i in range(20)])
        yield log


@pytest.mark.parametrize(("name", "call"), WRONG_TYPES, ids=[c[0] for c in WRONG_TYPES])
def test_a_wrong_type_is_an_argument_type_error(wal: segwal.Wal, name: str, call: Call) -> None:
    with pytest.raises(ArgumentTypeError) as info:
        result = call(wal)
        next(iter(result))  # generators check when called, not when first read
    assert isinstance(info.value, segwal.ConfigError) and isinstance(info.value, TypeError)
    assert info.value.option
    assert wal.append(b"still works") == 21


@pytest.mark.parametrize(("name", "call", "error"), WRONG_VALUES, ids=[c[0] for c in WRONG_VALUES])
def test_a_wrong_value_is_a_typed_error(
    wal: segwal.Wal, name: str, call: Call, error: type[Exception]
) -> None:
    with pytest.raises(error):
        call(wal)
    assert wal.append(b"still works") == 21
    assert wal.read(21).payload == b"still works"


def test_a_clock_that_returns_floats_is_refused_at_open(tmp_path: Path) -> None:
    for clock in (lambda: 1.5, lambda: "now", lambda: None, lambda: True):
        with pytest.raises(ArgumentTypeError, match="clock"):
            segwal.open(tmp_path / "log", clock=clock)  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError, match="clock"):
        segwal.open(tmp_path / "log", clock=3)  # type: ignore[arg-type]
    assert not (tmp_path / "log").exists()  # refused before anything was created


def test_a_clock_that_turns_to_floats_later_is_refused_on_append(tmp_path: Path) -> None:
    values = iter([1_000_000, 1_000_000, 2.5, 2.5])
    with segwal.open(tmp_path / "log", clock=lambda: next(values)) as wal:  # type: ignore[arg-type,return-value]
        with pytest.raises(ArgumentTypeError, match="clock"):
            wal.append(b"x")
        assert wal.last_lsn == 0


def test_an_int_subclass_clock_and_infinite_timeout_work(tmp_path: Path) -> None:
    class Micros(int):
        pass

    with segwal.open(tmp_path / "log", clock=lambda: Micros(1_000_000)) as wal:
        assert wal.append(b"x") == 1
        assert wal.wait_durable(1, timeout=float("inf"))
        assert [r.lsn for r in wal.follow(1, timeout=0)] == [1]
        assert wal.read(1).timestamp_us == 1_000_000


def test_append_many_reports_a_bad_request_in_its_place(tmp_path: Path) -> None:
    with segwal.open(tmp_path / "log") as wal:
        results = wal.append_many([([b"a"], 0), (None, 0), (b"bytes", 0), ([b"b"], "x")])
        assert results[0] == range(1, 2)
        assert isinstance(results[1], segwal.InvalidPayloadError)
        assert isinstance(results[2], segwal.InvalidPayloadError)
        assert isinstance(results[3], ArgumentTypeError)
        assert wal.last_lsn == 1
