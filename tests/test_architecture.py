"""The composed log (issue: layers visible, one owner per concern).

- What keeps records is known in one place: ``holds()`` lists consumer cursors, truncations
  are planned by ``truncate_plan`` for the CLI's dry run and for the real run alike, and
  every hint the CLI prints works when pasted.
- ``segwal.open``'s defaults are ``WalConfig``'s.
- Observers see sealed, rotated, rewound, deleted, synced, durable and cut events.
- A child forked from a writer cannot change the log.
- The segment catalog's snapshot costs the same whatever the number of segments.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import segwal
from segwal import events
from segwal.archive.archived import ArchiveOptions
from segwal.cli import main
from segwal.log.catalog import Sealed, SegmentCatalog, parts_for
from segwal.log.config import WalConfig

SEGMENT_BYTES = 4096


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def log_with_cursor(tmp_path: Path) -> Path:
    """200 records over several segments, and a consumer cursor c1 at LSN 5."""
    path = tmp_path / "log"
    with segwal.open(path, segment_bytes=SEGMENT_BYTES) as wal:
        for i in range(200):
            wal.append(b"record %03d " % i + bytes(40))
        wal.cursor("c1", start=5)
    return path


def _files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.name != "LOCK"}


# -- one owner for what keeps records ---------------------------------------------------


def test_holds_lists_cursor_holds(log_with_cursor: Path) -> None:
    with segwal.open(log_with_cursor, readonly=True) as wal:
        assert wal.holds() == {"cursor:c1": 5}
        assert wal.cursors() == {"c1": 5}
    listed = run("holds", str(log_with_cursor), "--json")
    assert listed.exit_code == 0, listed.output
    assert '{"name": "cursor:c1", "lsn": 5}' in listed.stdout
    human = run("holds", str(log_with_cursor)).stdout.splitlines()
    assert [line.split() for line in human[1:]] == [["cursor:c1", "5"]]


def test_dry_run_and_real_run_agree_when_a_cursor_holds(log_with_cursor: Path) -> None:
    before = _files(log_with_cursor)
    for extra in ([], ["--dry-run"], ["--yes"]):
        result = run("truncate", str(log_with_cursor), "--before", "100", *extra)
        assert result.exit_code == 2, (extra, result.output)
        assert "hold 'cursor:c1' keeps LSN 5" in result.stderr
        assert "would delete" not in result.stdout
    assert _files(log_with_cursor) == before


def test_the_hint_of_a_cursor_hold_works_when_pasted(log_with_cursor: Path) -> None:
    refused = run("truncate", str(log_with_cursor), "--before", "100", "--yes")
    hint = refused.stderr.split("release one with '", 1)[1].split("'", 1)[0]
    argv = shlex.split(hint)
    assert argv[:2] == ["segwal", "holds"] and argv[-1] == "--yes"
    # Without --yes, releasing a cursor's hold (its consumer's position) is refused.
    refused_release = run(*argv[1:-1])
    assert refused_release.exit_code == 2
    assert "needs --yes" in refused_release.stderr
    assert _files(log_with_cursor)["cursor.c1"]
    released = run(*argv[1:])
    assert released.exit_code == 0, released.output
    assert "no holds" in released.stdout
    assert "cursor.c1" not in _files(log_with_cursor)
    done = run("truncate", str(log_with_cursor), "--before", "100", "--yes")
    assert done.exit_code == 0, done.output
    with segwal.open(log_with_cursor, readonly=True) as wal:
        assert wal.first_lsn == 100


def test_truncate_plan_is_what_truncate_does(tmp_path: Path) -> None:
    with segwal.open(tmp_path / "log", segment_bytes=SEGMENT_BYTES) as wal:
        for i in range(300):
            wal.append(b"%05d" % i + bytes(50))
        plan = wal.truncate_plan(before=150)
        assert plan.operation == "before" and plan.changes
        assert (plan.new_first_lsn, plan.new_last_lsn) == (150, 300)
        doomed = [s.path for s in plan.deleted]
        assert doomed and all(s.last_lsn < 150 for s in plan.deleted)
        result = wal.truncate_before(150)
        assert result.segments_deleted == len(doomed)
        assert result.bytes_reclaimed == plan.bytes_reclaimed
        assert not any(os.path.exists(p) for p in doomed)
        after = wal.truncate_plan(after=200)
        rewrites = [a for a in after.segments if a.action == "rewrite"]
        assert len(rewrites) == 1 and rewrites[0].segment.first_lsn <= 200
        assert all(a.segment.first_lsn > 200 for a in after.segments if a.action == "delete")
        assert not wal.truncate_plan(after=300).changes
        assert not wal.truncate_plan(before=150).changes
        with pytest.raises(segwal.NotFoundError):
            wal.truncate_plan(before=302)
        with pytest.raises(segwal.ConfigError):
            wal.truncate_plan(before=1, after=2)
        with pytest.raises(segwal.ConfigError):
            wal.truncate_plan()
        wal.hold("backup", 160)
        with pytest.raises(segwal.HoldError):
            wal.truncate_plan(before=170)
        with pytest.raises(segwal.ConfigError, match="cursor"):
            wal.hold("cursor:x", 170)


def test_release_of_a_cursor_hold_deletes_the_cursor(tmp_path: Path) -> None:
    with segwal.open(tmp_path / "log") as wal:
        wal.append_batch([b"a"] * 10)
        wal.cursor("c1", start=3)
        assert wal.release("cursor:c1") is True
        assert wal.cursors() == {} and wal.holds() == {}
        assert wal.release("cursor:c1") is False


# -- one table of defaults --------------------------------------------------------------


def test_open_defaults_are_walconfig_defaults() -> None:
    # keys: the key ring segwal.open builds from its encryption options, not an option.
    fields = {f.name: f for f in dataclasses.fields(WalConfig) if f.name != "keys"}
    parameters = inspect.signature(segwal.open).parameters
    # encryption_key is the short form of encryption= (32 bytes), not an option of its own.
    assert parameters["encryption_key"].default is None
    archive = {n for n in parameters if n.startswith("archive")}
    assert set(parameters) - {"path", "encryption_key"} - archive == set(fields)
    uploads = {f.name: f.default for f in dataclasses.fields(ArchiveOptions)}
    assert archive - {"archive", "archive_options"} <= {f"archive_{n}" for n in uploads}
    for name, parameter in parameters.items():
        if name in ("path", "encryption_key"):
            continue
        if name in archive:
            short = name.removeprefix("archive_")
            assert parameter.default == uploads.get(short), name
            continue
        field = fields[name]
        if name == "observers":
            assert tuple(parameter.default) == field.default
        elif field.default_factory is not dataclasses.MISSING or name == "clock":
            assert parameter.default is None, name  # None: the config's own default
        else:
            assert parameter.default == field.default, name


# -- observers ---------------------------------------------------------------------------


def test_observers_see_the_events_of_an_open_log(tmp_path: Path) -> None:
    seen: list[events.Event] = []
    with segwal.open(tmp_path / "log", segment_bytes=SEGMENT_BYTES) as wal:
        stop = wal.observe(seen.append)
        wal.observe(lambda event: 1 / 0)  # a failing observer never fails the log
        for i in range(200):
            wal.append(b"%05d" % i + bytes(60))
        wal.truncate_before(100)
        wal.truncate_after(150)
        stop()
        wal.append(b"unseen")
    kinds = {type(e) for e in seen}
    assert {events.Sealed, events.Rotated, events.SegmentDeleted, events.Synced} <= kinds
    assert {events.Durable, events.Rewound} <= kinds
    sealed = [e for e in seen if isinstance(e, events.Sealed)]
    assert all(e.segment.sealed and e.segment.digest for e in sealed)
    rewound = [e for e in seen if isinstance(e, events.Rewound)]
    assert rewound == [events.Rewound(lsn=150, rewinds=1)]
    durable = [e.lsn for e in seen if isinstance(e, events.Durable)]
    assert durable == sorted(durable) and durable[-1] <= 200
    assert all(e.seconds >= 0 for e in seen if isinstance(e, events.Synced))
    rules = {e.rule for e in seen if isinstance(e, events.SegmentDeleted)}
    assert rules == {"truncate_before", "truncate_after"}


def test_observers_given_at_open_see_a_recovery_cut(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with segwal.open(path, sync="never") as wal:
        wal.append_batch([b"x" * 100] * 10)
    last = sorted(path.glob("*.wal"))[-1]
    with last.open("ab") as f:
        f.write(b"\xff" * 7)  # a torn write past the end
    seen: list[events.Event] = []
    with segwal.open(path, observers=(seen.append,)) as wal:
        assert wal.recovery.torn_tail
    cuts = [e.cut for e in seen if isinstance(e, events.RecoveryCut)]
    assert cuts == list(wal.recovery.cuts) and cuts[0].length == 7


# -- forks -------------------------------------------------------------------------------


def test_a_forked_child_cannot_change_the_log(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with segwal.open(path) as wal:
        wal.append(b"parent 1")
        seen: list[events.Event] = []
        wal.observe(seen.append)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: every change is refused, reads still work
            code = 0
            try:
                try:
                    wal.append(b"child")
                    code = 10
                except segwal.ForkedError as exc:
                    code = 0 if exc.parent_pid != os.getpid() else 11
                try:
                    wal.append_batch([b"child"])
                    code = 12
                except segwal.WalFailedError:
                    pass
                if wal.read(1).payload != b"parent 1":
                    code = 13
                if not any(isinstance(e, events.ForkDetected) for e in seen):
                    code = 14
                wal.close()  # releases the child's handles only
            finally:
                os.write(write, bytes([code]))
                os._exit(0)
        os.close(write)
        code = os.read(read, 1)
        os.close(read)
        os.waitpid(pid, 0)
        assert code == b"\0"
        assert wal.append(b"parent 2") == 2
    with segwal.open(path, readonly=True) as wal:
        assert [r.payload for r in wal.replay()] == [b"parent 1", b"parent 2"]


# -- the catalog -------------------------------------------------------------------------


def test_a_snapshot_is_one_reference_and_a_point_read_visits_few_parts(tmp_path: Path) -> None:
    with segwal.open(tmp_path / "log", segment_bytes=SEGMENT_BYTES) as wal:
        wal.append_batch([b"x" * 40] * 3000)
        for _ in range(30):
            wal.append_batch([b"y" * 3000])
        catalog: SegmentCatalog = wal._state.catalog
        sealed: Sealed = catalog.sealed
        assert len(sealed.parts) >= 30
        assert catalog.sealed is sealed  # unchanged until the next seal: no copy per read
        middle = sealed.parts[len(sealed.parts) // 2]
        chosen = parts_for(sealed, None, middle.first_lsn, middle.first_lsn)
        assert chosen == [middle]
        assert wal.read(middle.first_lsn).lsn == middle.first_lsn


FORK_MUTATIONS = {
    "append": lambda w: w.append(b"child"),
    "append buffered": lambda w: w.append(b"child", type=3),
    "append_batch": lambda w: w.append_batch([b"child"]),
    "append_many": lambda w: w.append_many([([b"child"], 0)]),
    "sync": lambda w: w.sync(),
    "wait_durable": lambda w: w.wait_durable(w.last_lsn),
    "rotate": lambda w: w.rotate(),
    "truncate_before": lambda w: w.truncate_before(2),
    "truncate_after": lambda w: w.truncate_after(1),
    "hold": lambda w: w.hold("child", 1),
    "release": lambda w: w.release("parent"),
    "apply_retention": lambda w: w.apply_retention(),
    "prune_through": lambda w: w.prune_through(0),
}


@pytest.mark.parametrize("mutation", sorted(FORK_MUTATIONS))
def test_every_change_in_a_forked_child_is_refused(tmp_path: Path, mutation: str) -> None:
    path = tmp_path / "log"
    buffered = mutation == "append buffered"
    with segwal.open(path, sync="never", buffer_bytes=1 << 20 if buffered else 0) as wal:
        wal.append_batch([b"parent %d" % i for i in range(1, 4)])
        wal.hold("parent", 1)
        if buffered:
            wal.append(b"buffered in the parent", type=3)
        else:
            wal.sync()
        before = {p.name: p.read_bytes() for p in path.iterdir() if p.name != "LOCK"}
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                FORK_MUTATIONS[mutation](wal)
            except segwal.ForkedError:
                code = 0
            except BaseException:
                code = 2
            os.write(write, bytes([code]))
            os._exit(0)
        os.close(write)
        code = os.read(read, 1)
        os.close(read)
        os.waitpid(pid, 0)
        assert code == b"\0", mutation
        after = {p.name: p.read_bytes() for p in path.iterdir() if p.name != "LOCK"}
        assert after == before  # the child changed no file
        wal.append(b"parent again")  # the parent goes on
    with segwal.open(path, readonly=True) as wal:
        payloads = [r.payload for r in wal.replay()]
    assert payloads[:3] == [b"parent 1", b"parent 2", b"parent 3"]
    assert payloads[-1] == b"parent again" and b"child" not in payloads
