"""Deep verification of a log directory: every frame, every checksum, every digest.

Unlike opening, verify reads every byte of every segment, recomputes each sealed segment's
BLAKE3 digest, and reports problems instead of raising on the first one. It never writes.
It also reads ``META`` (and checks the first segment against it: without META the first
segment must be the first a log ever had), ``KEYS`` (sound, and of this log) and every
cursor file, so whatever would make an open or a retention decision fail is a problem here
too. A segment of a newer format
version is an ``unsupported`` problem, not corruption.
"""

from __future__ import annotations

import errno
import posixpath
from dataclasses import replace

from segwal.errors import (
    CorruptionError,
    MissingKeyError,
    NotRegularFileError,
    SegmentHeaderError,
    StorageError,
    UnsupportedFormatError,
)
from segwal.format import cursor as cursor_layout
from segwal.format.codecs import installed
from segwal.format.features import HEADER_COMPRESSED, HEADER_ENCRYPTED
from segwal.format.layout import HEADER_SIZE, SEAL_SIZE, SegmentHeader
from segwal.format.meta import Meta
from segwal.format.naming import META_NAME, Kind, parse
from segwal.storage.coding import PLAIN, Coding
from segwal.storage.dictionaries import Dictionaries
from segwal.storage.dictionaries import check as check_dictionaries
from segwal.storage.fileio import FileSystem
from segwal.storage.framereads import iter_records
from segwal.storage.keys import check as check_keys
from segwal.storage.meta import load as load_meta
from segwal.storage.recovery import (
    SegmentState,
    continuity_problem,
    first_segment_problem,
    scanned_state,
)
from segwal.storage.segment import read_header
from segwal.storage.tailscan import scan_tail, written_after_durable
from segwal.types import Problem, SegmentCheck, VerifyReport


def verify_directory(fs: FileSystem, directory: str, coding: Coding = PLAIN) -> VerifyReport:
    """Check every segment in ``directory``; the report says per segment clean or where not.

    Checksums, seals and the chain need no key. With a key ring in ``coding``, every
    encrypted frame is authenticated too, and every compressed frame whose codec is
    installed is decompressed (format v2), with the dictionary its segment names: a missing,
    damaged or ambiguous dictionary is a problem, and so is a damaged one no segment names.
    """
    if coding.dictionaries is None:
        coding = replace(coding, dictionaries=Dictionaries(fs, directory))
    entries = [(parse(e.name), e.is_file) for e in fs.list_dir(directory)]
    names = sorted(
        (item for item in entries if item[0].kind is Kind.SEGMENT),
        key=lambda item: item[0].first_lsn,
    )
    problems: list[Problem] = []
    meta, has_meta = _check_meta(fs, directory, problems)
    for name, is_file in sorted(entries, key=lambda item: item[0].name):
        if name.kind is Kind.CURSOR:
            _check_cursor(fs, posixpath.join(directory, name.name), is_file, problems)
    checks: list[SegmentCheck] = []
    prev: SegmentState | None = None
    first_header: SegmentHeader | None = None
    records = 0
    for index, (name, is_file) in enumerate(names):
        path = posixpath.join(directory, name.name)
        last = index == len(names) - 1
        closed = meta.closed if meta is not None else None
        durable_end = closed.end if closed is not None and closed.segment == name.name else None
        problem, state = _check(fs, path, name.first_lsn, is_file, last, prev, durable_end)
        if problem is None and state is not None:
            problem = _check_bodies(fs, state, coding)
        if problem is not None:
            problems.append(problem)
        if state is None:
            checks.append(
                SegmentCheck(
                    path=path,
                    first_lsn=name.first_lsn,
                    last_lsn=name.first_lsn - 1,
                    records=0,
                    sealed=False,
                    ok=False,
                    bad_offset=problem.offset if problem else 0,
                    reason=problem.reason if problem else "",
                )
            )
            prev = None
            continue
        if index == 0:
            first_header = state.header
        count = state.last_lsn - state.header.first_lsn + 1
        records += count
        checks.append(
            SegmentCheck(
                path=path,
                first_lsn=state.header.first_lsn,
                last_lsn=state.last_lsn,
                records=count,
                sealed=state.seal is not None,
                ok=problem is None,
                bad_offset=None if problem is None else problem.offset,
                reason="" if problem is None else problem.reason,
            )
        )
        prev = state if state.seal is not None else None
    problems.extend(check_dictionaries(fs, directory))
    keys_problem = check_keys(fs, directory, first_header.log_id if first_header else None)
    if keys_problem is not None:
        problems.append(keys_problem)
    if meta is not None and checks:
        problems.extend(
            _start_problems(checks, first_header, meta, has_meta, names[0][0].first_lsn)
        )
    ok = not any(p.kind in ("corruption", "unsupported") for p in problems)
    first = checks[0].first_lsn if checks else 1
    last_lsn = checks[-1].last_lsn if checks else 0
    return VerifyReport(
        ok=ok,
        problems=tuple(problems),
        segments=tuple(checks),
        records=records,
        first_lsn=first,
        last_lsn=last_lsn,
    )


def _check(
    fs: FileSystem,
    path: str,
    name_lsn: int,
    is_file: bool,
    last: bool,
    prev: SegmentState | None,
    durable_end: int | None = None,  # how far a clean close left this segment durable
) -> tuple[Problem | None, SegmentState | None]:
    if not is_file:
        return Problem(path=path, offset=None, lsn=name_lsn, reason="not a regular file"), None
    handle = fs.open_read(path)
    try:
        size = handle.size()
        if size < HEADER_SIZE:
            reason = f"segment of {size} bytes is shorter than its header"
            return Problem(path=path, offset=0, lsn=name_lsn, reason=reason), None
        try:
            header = read_header(handle)
        except SegmentHeaderError as exc:
            return Problem(path=path, offset=0, lsn=name_lsn, reason=str(exc)), None
        except UnsupportedFormatError as exc:
            # Not damage: a newer segwal wrote it (FORMAT.md, compatibility rules).
            problem = Problem(
                path=path, offset=0, lsn=name_lsn, reason=str(exc), kind="unsupported"
            )
            return problem, None
        if header.first_lsn != name_lsn:
            reason = f"header says first LSN {header.first_lsn}, name says {name_lsn}"
            return Problem(path=path, offset=0, lsn=name_lsn, reason=reason), None
        scan = scan_tail(handle, header, size)
        state = scanned_state(path, header, size, scan)
        gap = continuity_problem(prev, header) if prev is not None else None
        if prev is not None and gap is not None:
            return Problem(path=path, offset=0, lsn=prev.last_lsn + 1, reason=gap), state
        if scan.damage_offset is not None:
            lsn = scan.last_lsn + 1
            torn = last and not written_after_durable(handle, header, scan.damage_offset, size, lsn)
            reason = scan.reason
            if torn and durable_end is not None and scan.damage_offset < durable_end:
                torn = False  # a clean close made it durable: bit rot, not a torn write
                reason += f"; a clean close left the segment durable up to offset {durable_end}"
            kind = "torn_tail" if torn else "corruption"
            problem = Problem(
                path=path, offset=scan.damage_offset, lsn=lsn, reason=reason, kind=kind
            )
            return problem, state
        if last and durable_end is not None and state.end < durable_end:
            reason = (
                f"the records end at offset {state.end}, but a clean close left the segment "
                f"durable up to offset {durable_end}"
            )
            return Problem(path=path, offset=state.end, lsn=scan.last_lsn + 1, reason=reason), state
        if scan.seal is not None and not last and size != state.end + SEAL_SIZE:
            # Preallocated zeros after a seal are trimmed before a next segment exists.
            reason = f"{size - state.end - SEAL_SIZE} bytes follow the seal"
            return Problem(path=path, offset=state.end, lsn=scan.last_lsn + 1, reason=reason), state
        if scan.seal is None and not last:
            reason = "segment is not sealed but a later segment exists"
            return Problem(path=path, offset=size, lsn=scan.last_lsn + 1, reason=reason), state
        return None, state
    finally:
        handle.close()


def _check_bodies(fs: FileSystem, state: SegmentState, coding: Coding) -> Problem | None:
    """Decode the opaque frames of a v2 segment the key ring and codecs at hand can open."""
    header = state.header
    if header.flags & HEADER_ENCRYPTED and coding.keys is None:
        return None  # authenticated only with the key: the CRCs were checked
    if header.flags & HEADER_COMPRESSED and not installed(header.compression_id):
        return None
    if (
        not header.flags & (HEADER_ENCRYPTED | HEADER_COMPRESSED)
        or state.last_lsn < header.first_lsn
    ):
        return None
    handle = fs.open_read(state.path)
    try:
        for records in iter_records(
            handle,
            header,
            start=HEADER_SIZE,
            end=state.end,
            first_lsn=header.first_lsn,
            from_lsn=header.first_lsn,
            to_lsn=state.last_lsn,
            coding=coding,
        ):
            for _record in records:
                pass
    except CorruptionError as exc:
        return Problem(path=state.path, offset=exc.offset, lsn=exc.lsn, reason=str(exc))
    except (MissingKeyError, UnsupportedFormatError) as exc:
        return Problem(path=state.path, offset=0, lsn=None, reason=str(exc), kind="unsupported")
    finally:
        handle.close()
    return None


def _unusable(exc: StorageError) -> bool:
    """A name segwal opens that holds something other than a regular file."""
    return isinstance(exc, NotRegularFileError) or exc.errno == errno.EISDIR


def _check_meta(
    fs: FileSystem, directory: str, problems: list[Problem]
) -> tuple[Meta | None, bool]:
    """(META or the default when there is none, whether there is one); None when it is
    unreadable, which is a problem: every open would fail on it."""
    path = posixpath.join(directory, META_NAME)
    try:
        stored = load_meta(fs, directory)
    except CorruptionError as exc:
        problems.append(Problem(path=path, offset=exc.offset, lsn=None, reason=exc.reason))
        return None, True
    except StorageError as exc:
        if not _unusable(exc):
            raise
        problems.append(Problem(path=path, offset=None, lsn=None, reason=exc.strerror or ""))
        return None, True
    return (stored or Meta()), stored is not None


def _check_cursor(fs: FileSystem, path: str, is_file: bool, problems: list[Problem]) -> None:
    """A cursor file the writer could not read would stop retention: report it."""
    if not is_file:
        problems.append(Problem(path=path, offset=None, lsn=None, reason="not a regular file"))
        return
    try:
        handle = fs.open_read(path)
    except StorageError as exc:
        if not _unusable(exc):
            raise
        problems.append(Problem(path=path, offset=None, lsn=None, reason=exc.strerror or ""))
        return
    try:
        raw = handle.pread(cursor_layout.MAX_SIZE + 1, 0)
    finally:
        handle.close()
    try:
        cursor_layout.decode(raw, path)
    except CorruptionError as exc:
        problems.append(Problem(path=path, offset=exc.offset, lsn=None, reason=exc.reason))


def _start_problems(
    checks: list[SegmentCheck],
    header: SegmentHeader | None,
    meta: Meta,
    has_meta: bool,
    name_lsn: int,
) -> list[Problem]:
    """Where the log starts and ends, checked against META (without one: against LSN 1)."""
    path = checks[0].path
    if not has_meta:
        if name_lsn != 1:
            reason = (
                f"the log has no META, so it must start at LSN 1, but its first segment "
                f"starts at LSN {name_lsn}: segments are missing"
            )
            return [Problem(path=path, offset=0, lsn=1, reason=reason)]
        missing = first_segment_problem(header) if header is not None else None
        return [] if missing is None else [Problem(path=path, offset=0, lsn=1, reason=missing)]
    out = []
    if name_lsn > meta.first_lsn:
        reason = (
            f"the first segment starts at LSN {name_lsn} but META's checkpoint keeps LSN "
            f"{meta.first_lsn} and later: segments are missing"
        )
        out.append(Problem(path=path, offset=0, lsn=meta.first_lsn, reason=reason))
    end = checks[-1].last_lsn
    if meta.first_lsn > end + 1 and all(c.ok for c in checks):
        reason = (
            f"META's checkpoint keeps LSN {meta.first_lsn} and later, but the records end at "
            f"LSN {end}"
        )
        out.append(Problem(path=checks[-1].path, offset=None, lsn=meta.first_lsn, reason=reason))
    return out
