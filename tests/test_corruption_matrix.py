"""The corruption matrix: one fault at a time on reference logs, each checked against an
outcome predicted from the documented rules (docs/FORMAT.md, docs/DURABILITY.md).

Reference logs (tests/fuzz_target.py): three sealed 1 KiB segments and an active one, in
four flavours -- "always" (each frame records the previous batch durable; the active segment
ends with a 3-frame batch and one more frame), "never" (one ``sync()`` in the middle of the
active segment, which ends with an unsynced 3-frame batch), "empty_active" (the active
segment holds no frame) and "sealed_tail" (the last segment is sealed: a crash after a seal,
before the next segment existed). Faults, one per case:

* a bit flip in every bit of every header byte and every seal byte of every segment, in every
  bit of every frame head and length table, and in five bits of every payload byte;
* a zeroed or garbage 512-byte sector anywhere;
* truncation at 0, inside the header, at every frame and seal boundary and one byte either
  side, and at every byte of the last batch;
* garbage, zeros, kind bytes, a copy of the last frame or of the seal after each segment;
* a segment deleted, duplicated or renamed (to another LSN's name, to LSN 0, past the end, to
  a temp name), two segments swapped, a stale copy (a prefix at each batch boundary), the
  same segment of another log.

The oracle walks the directory as FORMAT.md says a reader must (header, name, chain, seal,
frames) but knows where the fault is, because every file's header identifies the reference
segment it came from. It predicts, per case: ``CorruptionError`` naming file and offset
range; or a clean open with a cut exactly at the end of the last whole batch before the
damage, only when no intact later frame recorded the damaged LSN durable (the ambiguity
window) or when nothing is lost (space past the last record); or a clean open whose replay
raises (damage inside sealed segments, which open does not scan). ``segwal.verify`` must
report every fault outside the window (ok False, file, offset), and replay must equal the
reference prefix byte for byte. A sample of cases also runs the "strict", "truncate" and
readonly opens.

The same faults and oracle run on two format v2 logs (``fuzz_target.v2_reference_logs``): a
zstd log written with sync="always" and a zstd + AES-256-GCM log written with sync="never",
opened with its key ring; every ``V2_EVERY``-th case. The frame CRC covers the stored
(compressed, encrypted) bytes, so the predictions are the version 1 ones, and replay must
give back the reference records through the codec and the key, with one difference: a
reader with the key authenticates an encrypted frame instead of computing its CRC, so
damage confined to the CRC fields of a sealed segment's encrypted frames is reported by
``verify`` (and by recovery, in the scanned tail) but not by replay, which returns the
authentic records.

The counts per outcome are printed by the last test (visible with ``-s`` or not: it writes
through ``capsys.disabled()``); ``docs/DURABILITY.md`` publishes them.

Environment: ``SEGWAL_MATRIX_EVERY=n`` runs every n-th case only (quick local runs);
``SEGWAL_MATRIX_WORKERS`` sets the number of worker processes (default 2);
``SEGWAL_MATRIX_V2_EVERY`` the stride of the format v2 logs (default 5).
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import random
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

import fuzz_target
import segwal
from fuzz_target import (
    FLAVOURS,
    LOG,
    V2_REF_FLAVOURS,
    RefLog,
    RefSegment,
    header_index,
    keys_for,
    make_fs,
    open_log,
    reference_logs,
    replay_all,
    seg_name,
    v2_reference_logs,
)
from segwal import ContinuityError, CorruptionError, SealError, SegmentHeaderError
from segwal.format.features import HEADER_ENCRYPTED
from segwal.format.layout import FRAME_HEAD_SIZE, HEADER_SIZE, SEAL_SIZE, decode_header

SECTOR = 512
EVERY = int(os.environ.get("SEGWAL_MATRIX_EVERY", "1"))
WORKERS = int(os.environ.get("SEGWAL_MATRIX_WORKERS", "2"))
SIDE_MODES_EVERY = 4  # every 4th case also runs strict, truncate and readonly (in turn)
MAX_FAILURES = 40
# The format v2 logs run every V2_EVERY-th case (a fixed stride, so each run checks the same
# cases): about 4,800 per log, 8 s each on two workers.
V2_EVERY = int(os.environ.get("SEGWAL_MATRIX_V2_EVERY", "5"))

Files = dict[str, bytes]


# -- faults ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Case:
    family: str
    detail: str
    files: Files


def _flip(data: bytes, pos: int, bit: int) -> bytes:
    return data[:pos] + bytes([data[pos] ^ (1 << bit)]) + data[pos + 1 :]


def _with(ref: RefLog, name: str, data: bytes | None) -> Files:
    files = dict(ref.files)
    if data is None:
        del files[name]
    else:
        files[name] = data
    return files


def generate(ref: RefLog) -> Iterator[Case]:
    """Every single-fault case for one reference log, in a fixed order."""
    rng = random.Random(f"matrix/{ref.key}")
    segs = ref.segments
    for seg in segs:
        data = seg.data
        name = seg.name
        for pos in range(HEADER_SIZE):
            for bit in range(8):
                yield Case(
                    "flip.header", f"{name}@{pos}.{bit}", _with(ref, name, _flip(data, pos, bit))
                )
        if seg.seal is not None:
            for pos in range(seg.seal.offset, seg.seal.end):
                for bit in range(8):
                    yield Case(
                        "flip.seal", f"{name}@{pos}.{bit}", _with(ref, name, _flip(data, pos, bit))
                    )
        for unit in seg.frames:
            table_end = unit.offset + FRAME_HEAD_SIZE + 4 * unit.count
            for pos in range(unit.offset, unit.end):
                if pos < table_end:
                    family = (
                        "flip.frame_head" if pos < unit.offset + FRAME_HEAD_SIZE else "flip.lengths"
                    )
                    bits: tuple[int, ...] = tuple(range(8))
                else:
                    # Five of a payload byte's eight bits, rotating with the position.
                    family = "flip.payload"
                    bits = tuple((pos + k) % 8 for k in (0, 2, 3, 5, 6))
                for bit in bits:
                    yield Case(
                        family, f"{name}@{pos}.{bit}", _with(ref, name, _flip(data, pos, bit))
                    )
        for start in range(0, len(data), SECTOR):
            stop = min(len(data), start + SECTOR)
            zeroed = data[:start] + bytes(stop - start) + data[stop:]
            garbage = data[:start] + rng.randbytes(stop - start) + data[stop:]
            yield Case("sector.zero", f"{name}@{start}", _with(ref, name, zeroed))
            yield Case("sector.garbage", f"{name}@{start}", _with(ref, name, garbage))
        cuts = {0, 1, 64, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 1}
        for unit in seg.units:
            for edge in (unit.offset, unit.end):
                cuts |= {edge - 1, edge, edge + 1}
        if seg is segs[-1] and seg.frames:
            cuts |= set(range(seg.frames[-1].batch_start, len(data)))
        for cut in sorted(c for c in cuts if 0 <= c < len(data)):
            yield Case("truncate", f"{name}@{cut}", _with(ref, name, data[:cut]))
        tails = {
            "garbage1": rng.randbytes(1),
            "garbage39": rng.randbytes(39),
            "garbage40": rng.randbytes(40),
            "garbage41": rng.randbytes(41),
            "garbage300": rng.randbytes(300),
            "garbage512": rng.randbytes(512),
            "zeros1": bytes(1),
            "zeros40": bytes(40),
            "zeros512": bytes(512),
            "R64": b"R" * 64,
            "S200": b"S" * 200,
        }
        if seg.frames:
            last = seg.frames[-1]
            tails["copy_of_last_frame"] = data[last.offset : last.end]
        if seg.seal is not None:
            tails["copy_of_seal"] = data[seg.seal.offset : seg.seal.end]
        for label, tail in tails.items():
            yield Case("append", f"{name}+{label}", _with(ref, name, data + tail))
    yield from _segment_faults(ref)


def _segment_faults(ref: RefLog) -> Iterator[Case]:
    segs = ref.segments
    names = [s.name for s in segs]
    after_end = seg_name(ref.last_lsn + 1)
    for i, seg in enumerate(segs):
        yield Case("segment.delete", seg.name, _with(ref, seg.name, None))
        targets = {seg_name(seg.first_lsn + 1), seg_name(0), after_end, seg_name(10**20 - 1)}
        for target in sorted(targets - set(names)):
            files = dict(ref.files)
            files[target] = seg.data
            yield Case("segment.duplicate", f"{seg.name}->{target}", files)
            files = dict(files)
            del files[seg.name]
            yield Case("segment.rename", f"{seg.name}->{target}", files)
        files = _with(ref, seg.name, None)
        files[seg.name + ".tmp"] = seg.data
        yield Case("segment.rename", f"{seg.name}->.tmp", files)
        for j in range(i + 1, len(segs)):
            files = dict(ref.files)
            files[seg.name], files[segs[j].name] = segs[j].data, seg.data
            yield Case("segment.swap", f"{seg.name}<->{segs[j].name}", files)
        boundaries = [HEADER_SIZE] + [u.end for u in seg.frames if u.commit]
        for end in sorted(set(boundaries)):
            if end < len(seg.data):
                yield Case(
                    "segment.stale", f"{seg.name}[:{end}]", _with(ref, seg.name, seg.data[:end])
                )
        other = reference_logs()["other"]
        donor = next((s for s in other.segments if s.name == seg.name), None)
        if donor is not None:
            yield Case("segment.foreign", seg.name, _with(ref, seg.name, donor.data))


# -- the oracle -----------------------------------------------------------------------------


@dataclass(slots=True)
class Scan:
    """What a frame-by-frame scan of one (possibly damaged) segment must find."""

    damage: int | None = None  # offset the scan stops at with damage
    kind: str = ""  # frame, nocommit, trailing, seal, seal_trailing; "" when none
    kept_last: int = 0  # last LSN of whole committed batches before the damage (or the end)
    first_changed: int = 0  # first byte that differs from the reference (or the cut)
    low: int = 0  # the reported offset may not be below this (start of the damaged batch)
    durable_after: bool = False  # an intact frame after the damage recorded it durable
    sealed: bool = False  # the scan ends at an intact seal that ends the file


@functools.cache
def refs() -> dict[str, RefLog]:
    """Every reference log: the version 1 flavours, "other", and the format v2 ones."""
    return {**reference_logs(), **v2_reference_logs()}


@functools.cache
def _index() -> dict[bytes, RefSegment]:
    """Every reference segment by its header bytes, the format v2 logs' too."""
    out = dict(header_index())
    for log in v2_reference_logs().values():
        for seg in log.segments:
            assert seg.data[:HEADER_SIZE] not in out
            out[seg.data[:HEADER_SIZE]] = seg
    return out


def first_diff(data: bytes, ref: bytes) -> int | None:
    if data == ref:
        return None
    n = min(len(data), len(ref))
    if data[:n] == ref[:n]:
        return n
    lo, hi = 0, n  # bisect on prefix equality: data[:lo] == ref[:lo], data[:hi] != ref[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if data[:mid] == ref[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def scan(data: bytes, src: RefSegment) -> Scan:
    out = Scan(first_changed=first_diff(data, src.data) or 0)
    ref = src.data
    units = src.units
    bad = next(
        (
            i
            for i, u in enumerate(units)
            if u.end > len(data) or data[u.offset : u.end] != ref[u.offset : u.end]
        ),
        None,
    )
    if bad is None:
        end = units[-1].end if units else HEADER_SIZE
        out.sealed = src.seal is not None
        if len(data) > end:
            out.sealed = False
            if src.seal is not None:
                out.damage = out.low = src.seal.offset
                out.kind = "seal_trailing"
            else:
                out.damage = out.low = end
                out.kind = "trailing"
    else:
        unit = units[bad]
        if unit.offset >= len(data):
            # The file ends exactly at a unit boundary: no damage unless inside a batch.
            if not unit.is_seal and unit.offset != unit.batch_start:
                out.damage = out.low = unit.batch_start
                out.kind = "nocommit"
        else:
            out.damage = unit.offset
            out.low = unit.batch_start
            out.kind = "seal" if unit.is_seal else "frame"
    stop = out.damage if out.damage is not None else len(data)
    out.kept_last = max(
        [u.first_lsn + u.count - 1 for u in units if not u.is_seal and u.commit and u.end <= stop],
        default=src.first_lsn - 1,
    )
    if out.damage is not None:
        expected = out.kept_last + 1
        out.durable_after = any(
            not u.is_seal
            and u.offset > out.damage
            and u.end <= len(data)
            and data[u.offset : u.end] == ref[u.offset : u.end]
            and u.durable >= expected
            for u in units
        )
    return out


@dataclass(slots=True)
class Expect:
    """The predicted outcome of one case."""

    category: str = "clean"
    error: type[CorruptionError] | None = None  # open (tolerate_tail) raises this
    blame: tuple[str, int, int] | None = None  # file, lowest and highest offset it may name
    cut: tuple[str, int, int] | None = None  # a torn tail cut: file, offset, LSN
    records: list[tuple[int, int, int, bytes]] = field(default_factory=list)
    first_lsn: int = 1
    last_lsn: int = 0
    # file, fewest and most records replay yields first, an LSN in the damaged frame, an LSN
    # after it in the same segment (0: none), the log the segment came from
    latent: tuple[str, int, int, int, int, str] | None = None
    verify_ok: bool = True
    verify_blame: tuple[str, int, int, str] | None = None  # file, lo, hi, kind
    strict_raises: bool = False
    truncate_records: list[tuple[int, int, int, bytes]] = field(default_factory=list)
    lost: frozenset[int] = frozenset()
    in_window: bool = False
    always_raises: bool = False  # open raises in every recovery mode, "truncate" included


def _records(src: RefSegment, upto: int) -> list[tuple[int, int, int, bytes]]:
    recs = refs()[src.log].records
    return [recs[lsn] for lsn in range(src.first_lsn, upto + 1)]


def _chain_ok(prev: RefSegment, src: RefSegment) -> bool:
    return (
        src.log_id == prev.log_id
        and src.sequence == prev.sequence + 1
        and src.first_lsn == prev.last_lsn + 1
        and src.prev_digest == prev.digest
    )


@dataclass(slots=True)
class Seen:
    """The oracle's view of one segment file."""

    name: str
    src: RefSegment | None
    problem: tuple[type[CorruptionError], int, int] | None  # header, name or chain
    scan: Scan | None = None
    seal_ok: bool = False  # open's check of a sealed segment: the reference seal ends the file


def _see(name: str, data: bytes, prev: RefSegment | None) -> Seen:
    src = _index().get(data[:HEADER_SIZE]) if len(data) >= HEADER_SIZE else None
    if src is None or src.first_lsn != int(name[:20]):
        return Seen(name, src, (SegmentHeaderError, 0, 0))
    if prev is not None and not _chain_ok(prev, src):
        return Seen(name, src, (ContinuityError, 0, 0), scan(data, src))
    seal_ok = (
        src.seal is not None
        and len(data) == len(src.data)
        and data[-SEAL_SIZE:] == src.data[-SEAL_SIZE:]
    )
    return Seen(name, src, None, scan(data, src), seal_ok)


def _first_ever(name: str, seen: Seen) -> bool:
    """Whether a log without META may start with this segment: the first it ever had
    (LSN 1, sequence 0, zero previous digest). Only what the header check let through is
    judged here; a bad header is a problem of its own."""
    src = seen.src
    if src is None or seen.problem is not None:
        return int(name[:20]) == 1
    return src.first_lsn == 1 and src.sequence == 0 and src.prev_digest == bytes(32)


def _obsolete(names: list[str]) -> set[str]:
    """Names recovery sets aside unread: segments wholly below a META checkpoint. These
    logs have no META, so none: a segment renamed to 00000000000000000000.wal is read and
    its header, which disagrees with the name, is reported."""
    del names
    return set()


def _crc_fields_only(data: bytes, src: RefSegment) -> bool:
    """Whether every byte that differs from the reference lies in the CRC field of an
    encrypted frame. A reader holding the key authenticates such a frame instead of
    computing its CRC (the tag covers every byte the CRC covers; docs/FORMAT.md, "Version
    2"), so replay and reads return the reference records, byte for byte; ``verify`` and
    recovery, which check every CRC, still report the damage."""
    if len(data) != len(src.data):
        return False
    if not decode_header(src.data[:HEADER_SIZE]).flags & HEADER_ENCRYPTED:
        return False
    fields = {u.offset + i for u in src.frames for i in range(4)}
    return all(i in fields for i, (a, b) in enumerate(zip(data, src.data, strict=True)) if a != b)


def predict(ref: RefLog, files: Files) -> Expect:
    """The outcome the documented rules give for this directory."""
    names = sorted(n for n in files if n.endswith(".wal"))
    exp = Expect()
    # verify: every segment, each against the previous one that had a good seal.
    problems: list[tuple[str, int, int, str]] = []
    prev: RefSegment | None = None
    for index, name in enumerate(names):
        seen = _see(name, files[name], prev)
        sc = seen.scan
        last = index == len(names) - 1
        prev = None
        if seen.problem is not None:
            problems.append((name, seen.problem[1], seen.problem[2], "corruption"))
        elif sc is not None and sc.damage is not None:
            hi = sc.damage if sc.kind == "seal_trailing" else sc.first_changed
            torn = last and not sc.durable_after
            problems.append((name, sc.low, hi, "torn_tail" if torn else "corruption"))
        elif sc is not None and not sc.sealed and not last:
            problems.append((name, len(files[name]), len(files[name]), "corruption"))
        if sc is not None and sc.sealed and sc.damage is None:
            prev = seen.src
    if names and not _first_ever(names[0], _see(names[0], files[names[0]], None)):
        problems.append((names[0], 0, 0, "corruption"))  # these logs have no META
    exp.verify_ok = all(kind != "corruption" for *_, kind in problems)
    exp.verify_blame = problems[0] if problems else None
    # open: obsolete names set aside, then segments in order up to the first damage.
    obsolete = _obsolete(names)
    names = [n for n in names if n not in obsolete]
    kept: list[tuple[RefSegment, int]] = []
    trunc: list[tuple[RefSegment, int]] | None = None  # what "truncate" keeps, after damage
    prev = None
    for index, name in enumerate(names):
        data = files[name]
        seen = _see(name, data, prev)
        src, sc = seen.src, seen.scan
        if seen.problem is not None:
            exp.error, exp.blame = seen.problem[0], (name, seen.problem[1], seen.problem[2])
            trunc = list(kept)
            break
        assert src is not None and sc is not None
        if index < len(names) - 1:
            if not seen.seal_ok:
                exp.error, exp.blame = SealError, (name, 0, len(data))
                trunc = [*kept, (src, sc.kept_last)]
                break
            kept.append((src, src.last_lsn))
            if sc.damage is not None and exp.latent is None and not _crc_fields_only(data, src):
                bad = next(u for u in src.frames if u.offset == sc.damage)
                done = sum(len(_records(s, upto)) for s, upto in kept[:-1])
                low = done + (bad.batch_lsn - src.first_lsn)
                high = done + (bad.first_lsn - src.first_lsn)
                after = bad.first_lsn + bad.count
                exp.latent = (
                    name, low, high, bad.first_lsn, after if after <= src.last_lsn else 0, src.log
                )  # fmt: skip
            prev = src
            continue
        # The last segment is scanned frame by frame.
        if sc.damage is None:
            kept.append((src, src.last_lsn if sc.sealed else sc.kept_last))
        elif sc.durable_after:
            hi = sc.damage if sc.kind == "seal_trailing" else sc.first_changed
            exp.error, exp.blame = CorruptionError, (name, sc.low, hi)
            trunc = [*kept, (src, sc.kept_last)]
        else:
            exp.cut = (name, sc.low, sc.kept_last + 1)
            kept.append((src, sc.kept_last))
    if names:
        # Once the first segment's header checks out, without META it must be the first
        # the log ever had; recovery raises before it looks at the seal or the frames.
        seen = _see(names[0], files[names[0]], None)
        if seen.problem is None and not _first_ever(names[0], seen):
            exp.error, exp.blame = ContinuityError, (names[0], 0, 0)
            exp.cut, exp.latent, exp.always_raises = None, None, True
    if exp.blame is not None:
        exp.verify_blame = next((p for p in problems if p[0] == exp.blame[0]), exp.verify_blame)
    exp.truncate_records = [r for s, upto in (trunc if trunc is not None else kept) for r in
                            _records(s, upto)]  # fmt: skip
    exp.strict_raises = exp.error is not None or exp.cut is not None
    if exp.error is None:
        exp.records = [r for s, upto in kept for r in _records(s, upto)]
        exp.first_lsn = kept[0][0].first_lsn if kept else 1
        exp.last_lsn = kept[-1][1] if kept else 0
        exp.lost = frozenset(set(ref.records) - {r[0] for r in exp.records})
    exp.category = _category(ref, files, exp, bool(obsolete))
    return exp


def _category(ref: RefLog, files: Files, exp: Expect, obsolete: bool) -> str:
    if files == ref.files:
        return "noop"
    if exp.error is not None:
        return f"raised.{exp.error.__name__}"
    window = all(lsn >= ref.window_lsn for lsn in exp.lost)
    exp.in_window = bool(exp.lost) and window
    if obsolete:
        return "open_deleted_lsn0_file" + (".records_lost" if exp.lost else "")
    if exp.latent is not None:
        return "latent.sealed_segment_damage"
    if exp.cut is not None:
        if not exp.lost:
            return "torn.nothing_lost"
        # Outside the window only when the damage left no intact frame after it to prove
        # the lost batches durable (a truncation, or damage running to the end of the file).
        return "torn.in_window" if window else "torn.damage_to_end_of_segment"
    if exp.lost:
        if min(exp.lost) < exp.first_lsn:
            return "undetectable.first_segment_lost"
        return "undetectable.tail_lost_in_window" if window else "undetectable.tail_lost"
    return "clean"


# -- checking one case ----------------------------------------------------------------------

KNOWN = {
    # read(lsn) of a record after a frame whose length field was damaged inside a sealed
    # segment: the head-skip jumps past the end and reports NotFoundError, not corruption.
    "F4.read-notfound": "NotFoundError",
}


def _path(name: str) -> str:
    return f"{LOG}/{name}"


def _check_error(
    err: BaseException, cls: type[CorruptionError], blame: tuple[str, int, int]
) -> str:
    if not isinstance(err, cls):
        return f"raised {err!r}, expected {cls.__name__}"
    assert isinstance(err, CorruptionError)
    name, lo, hi = blame
    if err.path != _path(name) or err.offset is None or not lo <= err.offset <= hi:
        return f"{err!r} names {err.path}@{err.offset}, expected {name}@{lo}..{hi}"
    return ""


def check(ref: RefLog, case: Case, exp: Expect, side: str | None) -> list[str]:
    """Run one case; the list of what disagreed with the prediction (empty: all good)."""
    out: list[str] = []
    fs = make_fs(case.files)
    report = segwal.verify(LOG, filesystem=fs)
    if report.ok != exp.verify_ok:
        out.append(f"verify ok={report.ok}, expected {exp.verify_ok}: {report.problems}")
    if exp.verify_blame is not None:
        name, lo, hi, kind = exp.verify_blame
        if not any(
            p.path == _path(name)
            and p.offset is not None
            and lo <= p.offset <= hi
            and p.kind == kind
            for p in report.problems
        ):
            out.append(f"verify missed {kind} in {name}@{lo}..{hi}: {report.problems}")
    out += _check_open(case, exp, fs, "tolerate_tail")
    if side == "strict":
        fs = make_fs(case.files)
        try:
            open_log(fs, "strict").close()
            if exp.strict_raises:
                out.append("strict open did not raise")
        except CorruptionError as exc:
            if not exp.strict_raises:
                out.append(f"strict open raised {exc!r}")
    elif side == "truncate" and exp.always_raises:
        try:
            open_log(make_fs(case.files), "truncate").close()
            out.append("truncate open did not raise")
        except CorruptionError as exc:
            out += [m for m in [_check_error(exc, exp.error, exp.blame)] if m]  # type: ignore[arg-type]
    elif side == "truncate":
        fs = make_fs(case.files)
        wal = open_log(fs, "truncate")
        try:
            records, stopped = replay_all(wal)
            if exp.latent is None and (records != exp.truncate_records or stopped is not None):
                out.append(
                    f"truncate kept {[r[0] for r in records][-3:]} ({stopped!r}), "
                    f"expected up to {[r[0] for r in exp.truncate_records][-3:]}"
                )
        finally:
            wal.close()
    elif side == "readonly":
        fs = make_fs(case.files)
        before = fs.fingerprint()
        out += [f"readonly: {m}" for m in _check_open(case, exp, fs, "readonly")]
        if fs.fingerprint() != before:
            out.append("readonly open changed the directory")
    return out


def _check_open(case: Case, exp: Expect, fs: object, mode: str) -> list[str]:
    out: list[str] = []
    readonly = mode == "readonly"
    try:
        wal = open_log(fs, "tolerate_tail", readonly=readonly)  # type: ignore[arg-type]
    except CorruptionError as exc:
        if exp.error is None:
            return [f"open raised {exc!r}, expected a clean open"]
        msg = _check_error(exc, exp.error, exp.blame)  # type: ignore[arg-type]
        return [msg] if msg else []
    try:
        if exp.error is not None:
            return [f"open did not raise, expected {exp.error.__name__} at {exp.blame}"]
        cuts = [(c.path, c.offset, c.lsn) for c in wal.recovery.cuts]
        want = [] if exp.cut is None else [(_path(exp.cut[0]), exp.cut[1], exp.cut[2])]
        if readonly:  # a readonly open reports where the damage is; it cuts nothing
            cuts = [(path, want[0][1], lsn) for path, _, lsn in cuts][:1] if want else cuts
        if cuts != want:
            out.append(f"cuts {cuts}, expected {want}")
        if (wal.first_lsn, wal.last_lsn) != (exp.first_lsn, exp.last_lsn):
            out.append(
                f"open holds {wal.first_lsn}..{wal.last_lsn}, expected "
                f"{exp.first_lsn}..{exp.last_lsn}"
            )
        records, stopped = replay_all(wal)
        if exp.latent is None:
            if stopped is not None:
                out.append(f"replay raised {stopped!r}")
            if records != exp.records:
                out.append(_diff_records(records, exp.records))
        else:
            out += _check_latent(wal, exp, records, stopped)
    finally:
        wal.close()
    return out


def _check_latent(
    wal: segwal.Wal,
    exp: Expect,
    records: list[tuple[int, int, int, bytes]],
    stopped: BaseException | None,
) -> list[str]:
    """Damage open cannot see: replay and read must raise, never skip or return wrong data."""
    assert exp.latent is not None
    name, low, high, bad_lsn, next_lsn, log = exp.latent
    out = []
    if not isinstance(stopped, CorruptionError) or stopped.path != _path(name):
        out.append(f"replay over damage in {name} ended with {stopped!r}")
    if not low <= len(records) <= high or records != exp.records[: len(records)]:
        out.append(f"replay yielded {len(records)} records before the damage, not {low}..{high}")
    for lsn, must_raise in ((bad_lsn, True), (next_lsn, False)):
        if not lsn:
            continue
        try:
            got = wal.read(lsn)
        except CorruptionError:
            continue
        except segwal.NotFoundError as exc:
            out.append(f"F4.read-notfound: read({lsn}) after damage in {name} raised {exc!r}")
            continue
        if must_raise or tuple(got) != refs()[log].records.get(lsn):
            out.append(f"read({lsn}) over damage in {name} returned {tuple(got)[:2]}")
    return out


def _diff_records(
    got: list[tuple[int, int, int, bytes]], want: list[tuple[int, int, int, bytes]]
) -> str:
    glsn, wlsn = [r[0] for r in got], [r[0] for r in want]
    if glsn != wlsn:
        return (
            f"replay LSNs {glsn[:3]}..{glsn[-3:]} ({len(glsn)}), expected {wlsn[:3]}..{wlsn[-3:]}"
        )
    bad = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
    return f"record {glsn[bad]} differs from the reference"


# -- running the matrix ---------------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    cases: int = 0
    families: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    window: int = 0
    known: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, other: Tally) -> None:
        self.cases += other.cases
        self.families.update(other.families)
        self.outcomes.update(other.outcomes)
        self.window += other.window
        self.known.update(other.known)
        self.failures += other.failures[: max(0, MAX_FAILURES - len(self.failures))]
        self.seconds = max(self.seconds, other.seconds)


def run_shard(args: tuple[str, int, int]) -> Tally:
    flavour, shard, shards = args
    ref = refs()[flavour]
    every = EVERY * V2_EVERY if flavour in V2_REF_FLAVOURS else EVERY
    tally = Tally()
    start = time.perf_counter()
    sides = ("strict", "truncate", "readonly")
    keys = keys_for(flavour)
    if keys is not None:
        fuzz_target._KEYS.append(keys)  # open_log opens with the key ring
    try:
        for i, case in enumerate(generate(ref)):
            if i % (shards * every) != shard * every:
                continue
            _run_case(ref, case, i, sides, tally)
    finally:
        fuzz_target._KEYS.clear()
    tally.seconds = time.perf_counter() - start
    return tally


def _run_case(ref: RefLog, case: Case, i: int, sides: tuple[str, ...], tally: Tally) -> None:
    exp = predict(ref, case.files)
    side = sides[(i // SIDE_MODES_EVERY) % 3] if i % SIDE_MODES_EVERY == 0 else None
    try:
        problems = check(ref, case, exp, side)
    except Exception as exc:  # a non-segwal exception escaping is a finding too
        problems = [f"unexpected {type(exc).__name__}: {exc}"]
    tally.cases += 1
    tally.families[case.family] += 1
    tally.outcomes[exp.category] += 1
    tally.window += exp.in_window
    for problem in problems:
        known = next((k for k in KNOWN if k in problem), None)
        if known is not None:
            tally.known[known] += 1
        elif len(tally.failures) < MAX_FAILURES:
            tally.failures.append(f"[{ref.key} {case.family} {case.detail}] {problem}")


_RESULTS: dict[str, Tally] = {}


@contextmanager
def _quiet() -> Iterator[None]:
    """Recovery logs a warning per cut and per segment moved aside: thousands here."""
    logger = logging.getLogger("segwal")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def matrix(flavour: str) -> Tally:
    if flavour not in _RESULTS:
        refs()  # built before the fork, shared by the workers
        _index()
        shards = max(1, WORKERS)
        jobs = [(flavour, s, shards) for s in range(shards)]
        start = time.perf_counter()
        with _quiet(), warnings.catch_warnings():
            # Python 3.12+ warns when forking a process that has threads (pytest may hold a
            # few from earlier tests); the workers only run this module's pure checks.
            warnings.simplefilter("ignore", DeprecationWarning)
            if shards == 1:
                parts = [run_shard(jobs[0])]
            else:
                with multiprocessing.get_context("fork").Pool(shards) as pool:
                    parts = pool.map(run_shard, jobs)
        total = Tally()
        for part in parts:
            total.add(part)
        total.seconds = time.perf_counter() - start
        _RESULTS[flavour] = total
    return _RESULTS[flavour]


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_single_faults(flavour: str) -> None:
    tally = matrix(flavour)
    assert tally.cases > 0
    assert not tally.failures, "\n".join(tally.failures)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("flavour", V2_REF_FLAVOURS)
def test_single_faults_compressed_and_encrypted(flavour: str) -> None:
    """The same faults and the same oracle on format v2 logs: a zstd log written with
    sync="always", and a zstd + AES-256-GCM log written with sync="never" (opened with its
    key ring). Checksums cover the stored bytes, so every prediction is the version 1 one."""
    pytest.importorskip("cryptography")
    tally = matrix(flavour)
    assert tally.cases >= 22_500 // (V2_EVERY * EVERY)  # 4,500 at the defaults
    assert not tally.failures, "\n".join(tally.failures)


def test_oracle_sees_the_reference_logs_clean() -> None:
    for key in (*FLAVOURS, *V2_REF_FLAVOURS):
        ref = refs()[key]
        exp = predict(ref, ref.files)
        assert exp.category == "noop" and exp.error is None and exp.cut is None
        assert exp.records == [ref.records[lsn] for lsn in sorted(ref.records)]
        assert exp.verify_ok


def test_window_is_the_documented_one() -> None:
    refs = reference_logs()
    # sync="always": the last batch only; "never": everything after the last sync().
    assert refs["always"].window_lsn == refs["always"].segments[-1].frames[-1].batch_lsn
    never = refs["never"]
    assert never.window_lsn < never.segments[-1].frames[-1].batch_lsn
    assert refs["empty_active"].window_lsn == refs["empty_active"].last_lsn + 1


def test_read_after_damaged_length_field_raises_corruption() -> None:
    ref = reference_logs()["always"]
    seg = ref.segments[1]
    frame = seg.frames[2]
    data = bytearray(seg.data)
    data[frame.offset + 13] ^= 0x04  # body bytes += 1024: the frame now runs past the seal
    fs = make_fs({**ref.files, seg.name: bytes(data)})
    with open_log(fs, "tolerate_tail") as wal, pytest.raises(CorruptionError):
        wal.read(frame.first_lsn + frame.count)


def test_zz_counts(capsys: pytest.CaptureFixture[str]) -> None:
    """Print the matrix's counts (runs last in this file)."""
    if not _RESULTS:
        pytest.skip("no matrix ran in this session")
    total = Tally()
    for tally in _RESULTS.values():
        total.add(tally)
    lines = [
        "",
        f"corruption matrix: {total.cases} single-fault cases over "
        f"{', '.join(f'{k} {v.cases} ({v.seconds:.0f} s)' for k, v in _RESULTS.items())}"
        + (f" (every {EVERY}th case)" if EVERY > 1 else ""),
        f"  inside the ambiguity window (records lost to a cut or a silent tail loss, all "
        f"in the window): {total.window}",
        "  outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(total.outcomes.items())),
        "  families: " + ", ".join(f"{k} {v}" for k, v in sorted(total.families.items())),
    ]
    for key, tally in _RESULTS.items():
        ref = refs()[key]
        window = (
            f"LSNs {ref.window_lsn}..{ref.last_lsn} of {ref.first_lsn}..{ref.last_lsn}"
            if ref.window_lsn <= ref.last_lsn
            else "empty"
        )
        picks = ("torn.in_window", "torn.damage_to_end_of_segment", "torn.nothing_lost")
        lines.append(
            f"  {key} (sync={ref.sync}): window {window}; {tally.cases} cases, "
            f"{tally.window} in the window; "
            + ", ".join(f"{p} {tally.outcomes[p]}" for p in picks)
            + f", undetectable {sum(v for k, v in tally.outcomes.items() if 'undetect' in k)}"
        )
    if total.known:
        lines.append(
            "  known findings hit: " + ", ".join(f"{k} {v}" for k, v in total.known.items())
        )
    with capsys.disabled():
        print("\n".join(lines))
