"""Every barrier is load-bearing: skip one fsync call site at a time (``skip_sync_sites``) and
the crash-state enumeration of ``crashlib`` must find a broken promise, in every sync mode,
unless the site is listed in ``REDUNDANT`` with the reason no crash state can need it.

The sites are found by reading ``src/segwal`` (every ``.sync("...")`` and
``sync_dir(..., "...")``), so a new barrier is tested as soon as it exists. Sites the
workloads never reach are listed in ``NOT_REACHED`` with the reason, and the test checks
they are indeed never reached. The table (site x mode -> caught by which workload, or why
not) is printed at the end of the module.

Two forms: the full search (``pytest -m "slow or not slow" tests/test_barriers.py``, ~9
minutes on 2 cores) tries every workload per site and mode, proves the REDUNDANT sites are
never caught, and with ``SEGWAL_WRITE_WITNESSES=1`` records the first catching workload of
each (site, mode) in ``barrier_witnesses.json``; every CI run replays those witnesses with
the site skipped (about a second each), so a barrier that stops being load-bearing, or a
workload that stops reaching it, fails the run.

``test_skipping_a_barrier_breaks_a_preallocated_log`` does the same for the barriers of the
write path on preallocated logs (preallocate=True), with two workloads that grow, seal and
rewind such a log.

The workloads are ``crashlib.barrier_specs``: the log's creation, a few workloads aimed at
one protocol path each (``crashlib.TARGETED``) and every sequence of up to two steps on an
empty log; ``scripts/crash_long.py --barriers --deep`` also tries every sequence of two
steps on a full log and a dozen random workloads.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

import crashlib
from crashlib import MODES, BarrierResult

# Barriers no crash state can show to be needed, and why (one reason per site).
REDUNDANT: dict[str, str] = {
    "recover.truncate": (
        "the cut is made durable by `open.sync`, the fdatasync of the same file that resumes "
        "it, before any record is counted durable or written after the cut"
    ),
    "recover.temp": (
        "hygiene: a leftover `*.wal.tmp` is never read as log data and is removed again at "
        "the next open"
    ),
    "truncate.unlink": (
        "the unlinks of later segments are made durable by the next fsync of the same "
        "directory (`truncate.rename` when the cut segment is rewritten, else `meta.rename`) "
        "before the rewind intent is cleared; until then the intent makes recovery remove them"
    ),
    "retention.unlink": (
        "META's new first LSN is durable (`meta.rename`) before any segment is unlinked; a "
        "segment whose unlink is lost lies below the checkpoint and the next open removes it"
    ),
    "retention.deferred": (
        "as `retention.unlink`: the checkpoint was made durable when the deletion was "
        "decided; a lost unlink leaves a segment below it that the next open removes"
    ),
}

# Barriers the crash workloads never reach, and why.
NOT_REACHED: dict[str, str] = {
    "recover.quarantine": (
        "only moves segments aside after corruption or a gap (recovery='truncate'); a crash "
        "alone never leaves either, and test_recovery covers the path"
    ),
    "recover.quarantine_copy": (
        "only in recovery='truncate' (the checker opens with 'tolerate_tail'); it keeps the "
        "forensic copy of cut bytes, which the promise does not cover"
    ),
    "fail.undo": "runs only after an injected write or barrier failure (test_faults)",
    "keys.sync": (
        "KEYS is written only for encrypted logs, which these workloads do not open; "
        "test_keys_crash (creation and rotation) and the new-encrypted base of "
        "test_crash_states enumerate it, and skipping this barrier breaks both"
    ),
    "archive.sync": (
        "ARCHIVE.state is written only by the archive's uploader, which these workloads do "
        "not run; test_archive_crash_states enumerates its crash states with the memory store"
    ),
    "archive.rename": "as `archive.sync`: test_archive_crash_states covers it",
    "dictionary.sync": (
        "a dictionary file is written only when a log is opened with compression_dictionary, "
        "which these workloads do not do; test_dict_crash enumerates its creation and shows "
        "that skipping this barrier leaves segments naming a torn dictionary"
    ),
    "dictionary.rename": (
        "as `dictionary.sync`; every segment that names a dictionary is created after it, and "
        "that creation's directory fsync (`create.rename`) covers this rename too"
    ),
    "dictionary.prune": (
        "only `prune_dictionaries` deletes dictionaries, of a closed log, none that a segment "
        "names; a lost unlink leaves an unreferenced file (test_dictionaries)"
    ),
    "keys.rename": (
        "as `keys.sync`: test_keys_crash shows that a rotation without this directory fsync "
        "is lost after it returned (the old KEK opens the log again); at creation the first "
        "segment's directory fsync covers it before any frame is written"
    ),
}

SITES = crashlib.sync_sites()
RESULTS: dict[tuple[str, str], BarrierResult] = {}

# For every load-bearing (site, mode): the workload that the full search (-m slow) found to
# break the promise when the site is skipped. CI replays just these, which takes seconds;
# `SEGWAL_WRITE_WITNESSES=1 pytest -m "slow or not slow" tests/test_barriers.py` writes it anew.
WITNESSES = Path(__file__).with_name("barrier_witnesses.json")


def _spec_dict(spec: crashlib.Spec) -> dict[str, object]:
    return {"mode": spec.mode, "base": spec.base, "steps": spec.steps, "focus": spec.focus}


def _spec(data: dict[str, object]) -> crashlib.Spec:
    steps = tuple((str(n), a) for n, a in data["steps"])  # type: ignore[attr-defined]
    return crashlib.Spec(str(data["mode"]), str(data["base"]), steps, data["focus"])  # type: ignore[arg-type]


def _load_witnesses() -> dict[str, dict[str, dict[str, object]]]:
    return json.loads(WITNESSES.read_text()) if WITNESSES.exists() else {}


def _search(site: str) -> list[BarrierResult]:
    tasks = [(site, mode, False) for mode in MODES]
    procs = crashlib.processes()
    for name in crashlib.BASES:
        crashlib.base(name)
    if procs <= 1:
        results = [crashlib._barrier_task(t) for t in tasks]
    else:
        with multiprocessing.get_context("fork").Pool(min(procs, len(tasks))) as pool:
            results = pool.map(crashlib._barrier_task, tasks)
    for result in results:
        RESULTS[result.site, result.mode] = result
    return results


def test_the_tables_name_real_sites() -> None:
    assert set(REDUNDANT) <= set(SITES), set(REDUNDANT) - set(SITES)
    assert set(NOT_REACHED) <= set(SITES), set(NOT_REACHED) - set(SITES)
    assert not set(REDUNDANT) & set(NOT_REACHED)
    assert len(SITES) >= 15, SITES  # the grep found the barriers


# The full search; CI replays its witnesses instead (below).
@pytest.mark.slow
@pytest.mark.parametrize("site", [s for s in SITES if s not in NOT_REACHED])
def test_skipping_the_barrier_breaks_the_promise(site: str) -> None:
    results = _search(site)
    for result in results:
        assert result.calls > 0, f"{site} is never reached in mode {result.mode}"
    if site in REDUNDANT:
        caught = [r for r in results if r.caught]
        assert not caught, (
            f"{site} is listed as redundant but skipping it breaks the promise "
            f"({caught[0].mode}): {caught[0].violation}"
        )
    else:
        missed = [r.mode for r in results if not r.caught]
        assert not missed, (
            f"skipping {site} broke no promise in mode(s) {missed}: the enumeration has a "
            "blind spot, or the barrier is redundant (then list it in REDUNDANT with why)"
        )


@pytest.mark.parametrize("site", sorted(NOT_REACHED))
def test_unreached_barriers_are_not_reached(site: str) -> None:
    """Cheap: only record the workloads (and their recoveries), crash nothing."""
    for mode in MODES:
        enumerator = crashlib.Enumerator(crashlib.BARRIER_POLICY, skip={site})
        for spec in crashlib.barrier_specs(mode):
            enumerator.record(spec)
        assert enumerator.calls[site] == 0, f"{site} is reached now: test it (remove it here)"


WITNESS_CASES = [
    (site, mode) for site, modes in sorted(_load_witnesses().items()) for mode in sorted(modes)
]


def test_every_load_bearing_site_has_a_witness_in_every_mode() -> None:
    """The witness file covers every site that is neither redundant nor unreached."""
    witnesses = _load_witnesses()
    needed = {s for s in SITES if s not in REDUNDANT and s not in NOT_REACHED}
    missing = sorted(
        (site, mode) for site in needed for mode in MODES if mode not in witnesses.get(site, {})
    )
    assert not missing, f"no witness for {missing}: run the slow search to write them"
    assert set(witnesses) <= needed, set(witnesses) - needed


@pytest.mark.parametrize(("site", "mode"), WITNESS_CASES)
def test_skipping_the_barrier_breaks_its_witness(site: str, mode: str) -> None:
    """The quick form of the search: the workload found once still catches the skip."""
    spec = _spec(_load_witnesses()[site][mode])
    result = crashlib.search_barrier(site, mode, specs=[spec])
    RESULTS.setdefault((site, mode), result)
    assert result.calls > 0, f"{site} is no longer reached by {spec.label()}"
    assert result.caught, (
        f"skipping {site} no longer breaks its witness {spec.label()}: rerun the full "
        "search (pytest -m slow tests/test_barriers.py) and update the table"
    )


# preallocate=True changes the write path (allocation under create.header and append.sync,
# the seal's trim under seal.sync, the trim of a sealed tail under open.sync): every barrier
# those paths reach must still be load-bearing on a preallocated log.
PREALLOC_SITES = (
    "append.sync",
    "create.header",
    "create.rename",
    "make_dir",
    "meta.rename",
    "meta.sync",
    "open.sync",
    "open.sync_dir",
    "seal.sync",
    "truncate.rename",
    "truncate.sync",
)


def _prealloc_specs(mode: str, option: str) -> list[crashlib.Spec]:
    grow_and_seal = (("append", None), ("batch", None), ("rotate", None), ("append", None))
    rewind = (("batch", None), ("trunc_after", 0.5), ("batch", None))
    return [
        crashlib.Spec(mode, f"new-{option}", grow_and_seal),
        crashlib.Spec(mode, f"full-{option}", rewind),
    ]


@pytest.mark.parametrize("option", ["prealloc", "direct"])
@pytest.mark.parametrize("mode", ["always", "never"])
@pytest.mark.parametrize("site", PREALLOC_SITES)
def test_skipping_a_barrier_breaks_a_preallocated_log(site: str, mode: str, option: str) -> None:
    """preallocate=True, and direct_io=True (O_DIRECT blocks over a preallocated tail)."""
    assert site in SITES and site not in REDUNDANT and site not in NOT_REACHED
    result = crashlib.search_barrier(site, mode, specs=_prealloc_specs(mode, option))
    assert result.calls > 0, f"{site} is not reached on a preallocated log"
    assert result.caught, f"skipping {site} broke no promise on a preallocated log ({mode})"


def test_barrier_table(capsys: pytest.CaptureFixture[str]) -> None:
    """Print the table of every site (the searched ones from this run)."""
    results = [RESULTS[key] for key in sorted(RESULTS)]
    for site in NOT_REACHED:
        results += [BarrierResult(site, mode, False, 0) for mode in MODES]
    notes = {**REDUNDANT, **NOT_REACHED}
    with capsys.disabled():
        print("\n" + crashlib.format_table(results, notes))
    assert results
    if os.environ.get("SEGWAL_WRITE_WITNESSES") == "1":
        witnesses: dict[str, dict[str, dict[str, object]]] = {}
        for r in results:
            if r.caught and r.spec is not None and r.site not in REDUNDANT:
                witnesses.setdefault(r.site, {})[r.mode] = _spec_dict(r.spec)
        WITNESSES.write_text(json.dumps(witnesses, indent=1, sort_keys=True) + "\n")
