"""The compiled durable wait (``DurableWait``, format/_durable.c) against the Python group
commit it replaces for a lone sync="always" writer (``GroupCommit.wait_durable``'s solo
barrier, ``Appender.barrier``, ``Publisher.publish``): the same appends leave the same
files, the same LOCK bytes, counters, fsync histogram and barrier counts, the same events
in the same order, and the same errors when the fdatasync fails; it really runs (Python's
wait and publication are not called); queued threads, observers, a replaced publication
and a rewind go through Python as before; and the C code runs clean under valgrind.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import segwal
from memcheck import DONE, run_memcheck
from segwal.errors import StorageError, WalFailedError
from segwal.events import Durable, Event, Synced
from segwal.format import encoder, lock
from segwal.log import fastpath
from segwal.log.commit import GroupCommit
from segwal.log.publisher import Publisher
from segwal.storage.lockfile import read_lock

FIXED_LOG_ID = uuid.UUID(int=0x5E6A1_0000_0000_0000_0000_0000_0077)
COMPILED = encoder.DurableWait is not None
needs_c = pytest.mark.skipif(
    not COMPILED and not os.environ.get("CI"), reason="the C extension is not built"
)
OPTIONS: list[dict[str, Any]] = [{}, {"preallocate": True}, {"direct_io": True}]


@contextmanager
def _path(name: str) -> Iterator[None]:
    """Durable single appends wait through: the C object ("compiled"), the Python group
    commit behind the compiled append ("python"), or the pure-Python append ("pure")."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(uuid, "uuid4", lambda: FIXED_LOG_ID)
        if name != "compiled":
            patch.setattr(fastpath, "DurableWait", None)
        if name == "pure":
            patch.setattr(fastpath, "FastAppender", None)
        yield


def _run(path: Path, name: str, options: dict[str, Any], n: int = 40) -> dict[str, Any]:
    events: list[Event] = []
    with _path(name):
        wal = segwal.open(
            path,
            sync="always",
            observers=[events.append],
            clock=lambda: 1_700_000_000_000_000,
            **options,
        )
        lsns = [wal.append(b"record %d" % i + bytes(i)) for i in range(n)]
        state = wal._state
        published = read_lock(state.fs, str(path))
        assert published is not None
        telemetry = state.telemetry
        outcome = {
            "lsns": lsns,
            "durable": wal.durable_lsn,
            "published": (published.durable_lsn, published.rewinds, published.counters),
            "barriers": state.commit.barriers,
            "fsyncs": state.io["fsyncs"],
            "histogram": sum(telemetry.fsync_buckets),
            "synced_to": state.writer.synced if state.writer else None,
            "events": [type(e).__name__ for e in events if isinstance(e, Synced | Durable)],
            "durable_events": [e.lsn for e in events if isinstance(e, Durable)],
        }
        wal.close()
    files = {}
    for entry in sorted(os.listdir(path)):
        if ".wal" in entry:
            files[entry] = (path / entry).read_bytes()
    outcome["files"] = files
    return outcome


@needs_c
@pytest.mark.parametrize("options", OPTIONS, ids=["plain", "preallocate", "direct_io"])
def test_same_outcome_as_the_python_group_commit(tmp_path: Path, options: dict[str, Any]) -> None:
    results = {
        name: _run(tmp_path / name, name, options) for name in ("compiled", "python", "pure")
    }
    assert results["compiled"] == results["python"] == results["pure"]
    compiled = results["compiled"]
    assert compiled["lsns"] == list(range(1, 41)) and compiled["durable"] == 40
    assert compiled["histogram"] == compiled["barriers"] == compiled["fsyncs"] >= 40


@needs_c
def test_it_runs_instead_of_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"wait": 0, "publish": 0}
    wait, publish = GroupCommit.wait_durable, Publisher._publish_locked

    def counting_wait(self: GroupCommit, *args: Any, **kwargs: Any) -> bool:
        calls["wait"] += 1
        return wait(self, *args, **kwargs)

    def counting_publish(self: Publisher, lsn: int) -> None:
        calls["publish"] += 1
        publish(self, lsn)

    monkeypatch.setattr(GroupCommit, "wait_durable", counting_wait)
    monkeypatch.setattr(Publisher, "_publish_locked", counting_publish)
    with segwal.open(tmp_path / "log", sync="always") as wal:
        wal.append(b"x0")  # a segment's first record takes the general path
        before = dict(calls)
        for i in range(1, 50):
            wal.append(b"x%d" % i)
        assert calls == before, "a lone durable append went through Python's wait or publish"
        published = read_lock(wal._state.fs, str(tmp_path / "log"))
        assert published is not None and published.durable_lsn == 50
        raw = (tmp_path / "log" / "LOCK").read_bytes()[: lock.SIZE]
        state = wal._state
        expected = lock.encode(
            os.getpid(),
            50,
            state.rewinds,
            state.published_counters(),
            wal._appender.publisher.generation,
        )
        assert raw == expected


@needs_c
def test_a_failed_fdatasync_fails_the_log_as_python_does(tmp_path: Path) -> None:
    """A direct_io segment writes through its O_DIRECT descriptor and syncs the buffered
    one: pointing the latter at /dev/null makes the fdatasync fail (EINVAL), the write not."""

    def failing(name: str) -> tuple[type[BaseException], str, int | None, int]:
        with _path(name):
            wal = segwal.open(tmp_path / name, sync="always", direct_io=True)
            wal.append(b"first")
            handle = wal._state.writer.handle
            if not hasattr(handle, "_dfd"):
                pytest.skip("this file system refuses O_DIRECT: one descriptor only")
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, handle._fd)
            os.close(null)
            with pytest.raises(StorageError) as raised:
                wal.append(b"second")
            with pytest.raises(WalFailedError):
                wal.append(b"third")
            durable = wal._state.commit.durable_lsn
            error = raised.value
            wal.close()
        cause = error.__cause__
        return type(error), str(error).replace(name, "NAME"), getattr(cause, "errno", None), durable

    compiled, python = failing("compiled"), failing("python")
    assert compiled == python
    assert compiled[0] is StorageError and compiled[3] == 1


@needs_c
def test_queued_threads_and_observers_still_work(tmp_path: Path) -> None:
    events: list[Event] = []
    with segwal.open(tmp_path / "log", sync="always", observers=[events.append]) as wal:

        def work(k: int) -> None:
            for i in range(40):
                wal.append(b"%d-%d" % (k, i))

        threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert wal.durable_lsn == 320
        state = wal._state
        assert sum(state.telemetry.fsync_buckets) == state.commit.barriers == state.io["fsyncs"]
        durable = [e.lsn for e in events if isinstance(e, Durable)]
        assert durable == sorted(durable) and durable[-1] == 320
        assert sum(isinstance(e, Synced) for e in events) == state.commit.barriers
        assert read_lock(state.fs, str(tmp_path / "log")).durable_lsn == 320  # type: ignore[union-attr]


@needs_c
def test_a_slow_fsync_warns_once_and_counts_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="segwal"),
        segwal.open(tmp_path / "log", sync="always", slow_fsync_seconds=1e-9) as wal,
    ):
        for i in range(5):
            wal.append(b"%d" % i)
        state = wal._state
        assert sum(state.telemetry.fsync_buckets) == state.commit.barriers
    assert sum("slow fdatasync" in r.getMessage() for r in caplog.records) >= 5


@needs_c
def test_a_replaced_publication_is_called(tmp_path: Path) -> None:
    seen: list[int] = []
    with segwal.open(tmp_path / "log", sync="always") as wal:
        wal.append(b"bound")  # binds the C object to this commit
        commit = wal._state.commit
        original = commit._on_durable

        def spy(lsn: int) -> None:
            seen.append(lsn)
            original(lsn)

        commit._on_durable = spy
        wal.append(b"after")
        assert seen == [2]


def test_a_wait_with_an_older_rewind_count_ends(tmp_path: Path) -> None:
    """The C object passes the rewind count it read when the wait began: a rewind since
    then ends the wait (False) instead of leading barriers for an LSN that is gone."""
    with segwal.open(tmp_path / "log", sync="never") as wal:
        for i in range(10):
            wal.append(b"%d" % i)
        commit = wal._state.commit
        before = commit.resets
        wal.truncate_after(5)
        assert commit.resets == before + 1
        assert commit.wait_durable(8, lead=True, resets=before) is False
        assert commit.wait_durable(5, lead=True, resets=before) is True


@needs_c
@pytest.mark.timeout(600)
def test_durable_wait_under_memcheck(tmp_path: Path) -> None:
    script = f"""
import os, segwal, threading
DONE = {DONE!r}
events = []
for n, options in enumerate([{{}}, {{"preallocate": True}}, {{"direct_io": True}}]):
    path = {str(tmp_path)!r} + "/log%d" % n
    wal = segwal.open(path, sync="always", observers=[events.append], **options)
    for i in range(30):
        wal.append(b"x" * i)
    ts = [threading.Thread(target=lambda: [wal.append(b"t") for _ in range(10)]) for _ in range(3)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert wal.durable_lsn == 60, wal.durable_lsn
    wal.close()
print(DONE)
"""
    run_memcheck(tmp_path, script, ("_durable.c",), timeout=400)
